"""Getting the real datasets, only when the user asks (``loclens download``, ``snakemake download``).

- ``slake``: the Hugging Face copy ``BoKelvin/SLAKE`` (``huggingface_hub.snapshot_download``,
  repo type dataset, pinned to the commit the Hub reports), then ``imgs.zip`` unpacked safely
  (``loclens.archive``) to ``imgs/xmlab<N>/...`` beside it.
- ``vqa_rad``: the original OSF release (https://osf.io/89kps/) as the project's zip, unpacked
  safely; the JSON's sha256 is checked against the published file's. The original is preferred
  over Hub copies because those lack most of its fields (see ``COPY_NOTES``).
- ``hub:<owner>/<name>``: any Hub dataset repository of VQA Parquet files (source ``hf_parquet``).

Files already in place (downloaded by hand, on another machine) are used as they are, without
network. Offline (``HF_HUB_OFFLINE=1``, honoured for every origin) or without access, the error
says exactly what to download and where to put it. Every completed download writes
``loclens-download.json`` last: origin, revision, and the sha256 of every file; the ingest stage
copies its summary into the plan, and the dataset card says where each dataset came from.
"""

from __future__ import annotations

import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path

from .archive import safe_extract
from .atomic import atomic_path, write_json
from .errors import LoclensError
from .provenance import canonical_json, package_version, sha256_bytes, sha256_file

RECORD = "loclens-download.json"

SLAKE_REPO = "BoKelvin/SLAKE"
SLAKE_FILES = ("train.json", "validation.json", "test.json", "mask.txt", "imgs.zip")

VQA_RAD_PAGE = "https://osf.io/89kps/"
#: The OSF project's files as one zip (what the page's "Download as zip" serves).
VQA_RAD_ZIP_URL = "https://files.osf.io/v1/resources/89kps/providers/osfstorage/?zip="
VQA_RAD_ZIP = "vqa_rad_osf.zip"
VQA_RAD_JSON = "VQA_RAD Dataset Public.json"
VQA_RAD_IMAGES = "VQA_RAD Image Folder"
#: sha256 of the published ``VQA_RAD Dataset Public.json`` (2,248 QA records).
VQA_RAD_JSON_SHA256 = "948b7156059b864cf72344fb10669233526b175c243e5a046d20d4201d297a95"

#: What known Hub copies lack compared with the original releases (quoted in the dataset card).
COPY_NOTES = {
    "flaviagiammarino/vqa-rad": (
        "a Hub copy of VQA-RAD with only image, question and answer columns, lower-cased; it lacks "
        "question_type (localization tags come from keyword rules), answer_type (derived: yes/no = closed), "
        "phrase_type (its own train/test split is used), paraphrase links (qid_linked_id) and image_organ"
    ),
}


class DownloadError(LoclensError, RuntimeError):
    """A download that cannot be done; the message says what to fetch by hand and where to put it."""


def offline() -> bool:
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return bool(constants.HF_HUB_OFFLINE) or flag in ("1", "ON", "YES", "TRUE")


# --- instructions -----------------------------------------------------------------------------


def slake_instructions(dest: Path) -> str:
    return (
        f"To get SLAKE by hand, on a machine with internet access:\n"
        f"  1. download the dataset repository https://huggingface.co/datasets/{SLAKE_REPO}\n"
        f"     (for example `hf download {SLAKE_REPO} --repo-type dataset --local-dir {dest}`), at least\n"
        f"     the files {', '.join(SLAKE_FILES)};\n"
        f"  2. put them in {dest}/ (so that {dest / 'train.json'} exists);\n"
        f"  3. run `loclens download slake --out {dest}` again: it finds them there, unpacks imgs.zip safely\n"
        f"     and records checksums, without network.\n"
        f"The original release (train.json, validate.json, test.json, mask.txt, imgs/xmlab<N>/...) from\n"
        f"https://www.med-vqa.com/slake/ works as well: put it in {dest}/ or point datasets.<name>.path at it."
    )


def vqa_rad_instructions(dest: Path) -> str:
    return (
        f"To get VQA-RAD by hand, on a machine with internet access:\n"
        f"  1. open {VQA_RAD_PAGE} and download the project's files as a zip ({VQA_RAD_ZIP_URL}),\n"
        f"     or the two entries '{VQA_RAD_JSON}' and '{VQA_RAD_IMAGES}/';\n"
        f"  2. save the zip as {dest / VQA_RAD_ZIP}, or put the two entries in {dest}/;\n"
        f"  3. run `loclens download vqa_rad --out {dest}` again: it unpacks the zip safely, checks the JSON's\n"
        f"     sha256 and records checksums, without network. Or point datasets.vqa_rad.path at the folder."
    )


def hub_instructions(repo: str, dest: Path) -> str:
    return (
        f"To get {repo} by hand, on a machine with internet access:\n"
        f"  1. download https://huggingface.co/datasets/{repo}\n"
        f"     (for example `hf download {repo} --repo-type dataset --local-dir {dest}`);\n"
        f"  2. put its files in {dest}/ (the Parquet files at any depth);\n"
        f"  3. run `loclens download hub:{repo} --out {dest}` again to record checksums without network,\n"
        f"     or point datasets.<name>.path at the folder."
    )


def _unknown(what: str) -> DownloadError:
    return DownloadError(f"cannot download {what!r}: known are slake, vqa_rad and hub:<owner>/<name>")


def present(what: str, dest: Path) -> bool:
    """Whether ``dest`` already holds what ``download(what, dest)`` fetches, so that the download
    runs without network (it then only unpacks and records checksums)."""
    if what == "slake":
        return _slake_present(dest)
    if what == "vqa_rad":
        unpacked = (dest / VQA_RAD_JSON).is_file() and (dest / VQA_RAD_IMAGES).is_dir()
        return unpacked or (dest / VQA_RAD_ZIP).is_file()
    if what.startswith("hub:"):
        return dest.is_dir() and any(dest.rglob("*.parquet"))
    raise _unknown(what)


def by_hand(what: str, dest: Path) -> dict[str, str]:
    """One line each of what to fetch (``get``), from where (``url``, the address a download
    would use) and where to put it (``put``): the short form of the ``*_instructions`` above, for
    a list of everything a build lacks."""
    from huggingface_hub import constants

    if what == "slake":
        return {
            "get": f"SLAKE: the files {', '.join(SLAKE_FILES)}",
            "url": f"{constants.ENDPOINT}/datasets/{SLAKE_REPO}",
            "put": f"{dest}/ (e.g. `hf download {SLAKE_REPO} --repo-type dataset --local-dir {dest}`)",
        }
    if what == "vqa_rad":
        return {
            "get": f"VQA-RAD: the OSF project's files as one zip (page {VQA_RAD_PAGE})",
            "url": VQA_RAD_ZIP_URL,
            "put": f"{dest / VQA_RAD_ZIP} (or its '{VQA_RAD_JSON}' and '{VQA_RAD_IMAGES}/' in {dest}/)",
        }
    if what.startswith("hub:"):
        repo = what[len("hub:") :]
        return {
            "get": f"{repo}: the dataset repository's Parquet files",
            "url": f"{constants.ENDPOINT}/datasets/{repo}",
            "put": f"{dest}/ (e.g. `hf download {repo} --repo-type dataset --local-dir {dest}`)",
        }
    raise _unknown(what)


# --- network steps (the only code here that touches the network) -------------------------------


def _hub_snapshot(repo: str, dest: Path, revision: str | None, timeout: float, instructions: str) -> str:
    """Download a Hub dataset repository into ``dest``; return the commit it was pinned to."""
    if offline():
        raise DownloadError(f"cannot download {repo}: offline mode (HF_HUB_OFFLINE=1) is set.\n{instructions}")
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    try:
        sha = HfApi().dataset_info(repo, revision=revision, timeout=timeout).sha
        if sha is None:
            raise ValueError(f"the Hub reported no commit for revision {revision or 'main'}")
        snapshot_download(repo_id=repo, repo_type="dataset", revision=sha, local_dir=dest, etag_timeout=timeout)
    except (GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise DownloadError(
            f"cannot download {repo}: no access ({type(exc).__name__}). If the repository is gated or private, "
            f"accept its terms on the Hub and set HF_TOKEN (or run `hf auth login`).\n{instructions}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any network failure gets the same instructions
        raise DownloadError(f"cannot download {repo}: {type(exc).__name__}: {exc}\n{instructions}") from None
    return sha


def _fetch_url(url: str, target: Path, timeout: float, instructions: str) -> None:
    if offline() and not url.startswith("file:"):
        raise DownloadError(f"cannot download {url}: offline mode (HF_HUB_OFFLINE=1) is set.\n{instructions}")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, atomic_path(target) as tmp:
            with open(tmp, "wb") as fh:
                shutil.copyfileobj(response, fh, 1 << 20)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DownloadError(f"cannot download {url}: {type(exc).__name__}: {exc}\n{instructions}") from None


# --- datasets -----------------------------------------------------------------------------------


def _slake_present(dest: Path) -> bool:
    splits = all((dest / n).is_file() for n in ("train.json", "test.json"))
    validation = (dest / "validation.json").is_file() or (dest / "validate.json").is_file()
    images = (dest / "imgs.zip").is_file() or (dest / "imgs").is_dir()
    return splits and validation and images


def download_slake(dest: Path, revision: str | None = None, timeout: float = 30.0) -> dict:
    origin = {"dataset": "slake", "origin": "hub", "repo": SLAKE_REPO, "revision": None}
    if _slake_present(dest):
        origin["origin"] = "local copy"
    else:
        origin["revision"] = _hub_snapshot(SLAKE_REPO, dest, revision, timeout, slake_instructions(dest))
        if not _slake_present(dest):
            raise DownloadError(
                f"{dest}: the download of {SLAKE_REPO} lacks SLAKE's files.\n{slake_instructions(dest)}"
            )
    if (dest / "imgs.zip").is_file():
        safe_extract(dest / "imgs.zip", dest)
    if not (dest / "imgs").is_dir():
        raise DownloadError(f"{dest / 'imgs.zip'}: does not hold imgs/xmlab<N>/...\n{slake_instructions(dest)}")
    return origin


def _place_vqa_rad(unpacked: Path, dest: Path) -> None:
    found = sorted(unpacked.rglob(VQA_RAD_JSON))
    if not found or not (found[0].parent / VQA_RAD_IMAGES).is_dir():
        raise DownloadError(
            f"{dest / VQA_RAD_ZIP}: holds no '{VQA_RAD_JSON}' beside '{VQA_RAD_IMAGES}/'\n{vqa_rad_instructions(dest)}"
        )
    for name in (VQA_RAD_JSON, VQA_RAD_IMAGES):
        (found[0].parent / name).replace(dest / name)


def download_vqa_rad(dest: Path, url: str | None = None, timeout: float = 30.0) -> dict:
    origin = {"dataset": "vqa_rad", "origin": "osf", "url": url or VQA_RAD_ZIP_URL, "page": VQA_RAD_PAGE}
    if not ((dest / VQA_RAD_JSON).is_file() and (dest / VQA_RAD_IMAGES).is_dir()):
        archive = dest / VQA_RAD_ZIP
        if archive.is_file():
            origin["origin"] = "local copy"
        else:
            _fetch_url(origin["url"], archive, timeout, vqa_rad_instructions(dest))
        staging = dest / ".osf-unpacked"
        try:
            safe_extract(archive, staging)
            _place_vqa_rad(staging, dest)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    else:
        origin["origin"] = "local copy"
    digest = sha256_file(dest / VQA_RAD_JSON)
    if digest != VQA_RAD_JSON_SHA256:
        raise DownloadError(
            f"{dest / VQA_RAD_JSON}: sha256 {digest} is not the published file's {VQA_RAD_JSON_SHA256}; "
            f"the download is corrupt or another version.\n{vqa_rad_instructions(dest)}"
        )
    return origin


def download_hub(repo: str, dest: Path, revision: str | None = None, timeout: float = 30.0) -> dict:
    origin = {"dataset": repo, "origin": "hub", "repo": repo, "revision": None}
    if any(dest.rglob("*.parquet")):
        origin["origin"] = "local copy"
    else:
        origin["revision"] = _hub_snapshot(repo, dest, revision, timeout, hub_instructions(repo, dest))
    return origin


def checksums(dest: Path) -> dict[str, str]:
    """sha256 of every file under ``dest`` except hidden ones (Hub caches, unpack markers)."""
    out = {}
    for path in sorted(dest.rglob("*")):
        rel = path.relative_to(dest)
        if path.is_file() and rel.name != RECORD and not any(p.startswith(".") for p in rel.parts):
            out[rel.as_posix()] = sha256_file(path)
    return out


def download(what: str, dest, revision: str | None = None, url: str | None = None, timeout: float = 30.0) -> dict:
    """Fetch ``what`` (slake, vqa_rad, hub:<repo>) into ``dest``; write and return the record."""
    dest = Path(dest)
    if what == "slake":
        origin = download_slake(dest, revision, timeout)
    elif what == "vqa_rad":
        origin = download_vqa_rad(dest, url, timeout)
    elif what.startswith("hub:") and what.count("/") == 1:
        origin = download_hub(what[len("hub:") :], dest, revision, timeout)
    else:
        raise _unknown(what)
    record = {**origin, "loclens_version": package_version(), "files": checksums(dest)}
    write_json(dest / RECORD, record)
    return record


def read_origin(root) -> dict | None:
    """Summary of ``root/loclens-download.json`` for plans and the card; None if not downloaded."""
    path = Path(root) / RECORD
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    summary = {k: record.get(k) for k in ("dataset", "origin", "repo", "revision", "url", "page")}
    summary = {k: v for k, v in summary.items() if v is not None}
    summary["files"] = len(record.get("files", {}))
    summary["files_sha256"] = sha256_bytes(canonical_json(record.get("files", {})).encode())
    note = COPY_NOTES.get(record.get("repo") or "")
    if note:
        summary["note"] = note
    return summary


__all__ = ["download", "read_origin", "present", "by_hand", "DownloadError", "offline", "RECORD", "COPY_NOTES"]
