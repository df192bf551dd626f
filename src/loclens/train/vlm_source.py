"""Where a VLM's weights come from: a local model folder, or a Hub id at a pinned revision.

A Hub model is read from the local Hugging Face cache; it is downloaded only when the user asks
(``train.vlm.download: true``). Otherwise, or offline, a missing model is a clear error that
names what to fetch.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import LoclensError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
REVISION = re.compile(r"^[0-9a-f]{40}$")


class ModelSourceError(LoclensError, ValueError):
    """A VLM that cannot be loaded; the message names the source and what to do."""


def resolve_model_source(source: str | None, revision: str | None = None, download: bool = False) -> str:
    """A local folder holding the model's ``config.json`` (and processor files)."""
    if not source:
        raise ModelSourceError("train.vlm.model: a model folder or a Hub id (owner/name) is required")
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelSourceError(f"{source}: not a Hugging Face model folder (no config.json)")
        return str(path)
    if source.startswith((".", "/", "~")) or not HUB_ID.match(source):
        raise ModelSourceError(f"{source}: model folder not found (and not a Hub id owner/name)")
    if not revision or not REVISION.match(revision):
        raise ModelSourceError(
            f"{source}: a Hub model needs a pinned revision (train.vlm.revision: the 40-hex commit sha), "
            f"got {revision!r}"
        )
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    fetch = f"hf download {source} --revision {revision}"
    if download and constants.HF_HUB_OFFLINE:
        raise ModelSourceError(
            f"{source}@{revision}: train.vlm.download is set but HF_HUB_OFFLINE is too; unset it, or fetch "
            f"the model first ({fetch})"
        )
    try:
        return snapshot_download(source, revision=revision, local_files_only=not download)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, FileNotFoundError):
        raise ModelSourceError(
            f"{source}@{revision}: not in the local Hugging Face cache; fetch it with `{fetch}`, "
            "or set train.vlm.download: true to let training download it"
        ) from None
