"""Load a loclens release, local or from the Hugging Face Hub, as ``datasets`` rows.

    import loclens
    train = loclens.load("results/release", dataset="vqa_rad", split="train")
    for row in loclens.load("me/loclens-vqa-rad", dataset="vqa_rad", split="train", streaming=True):
        row["image"], row["medsam_multicolor"], row["qa"]

Both go through the release's dataset card (its YAML ``configs``), exactly as
``datasets.load_dataset`` does, so what the training stage reads is what the Hub viewer shows.
"""

from __future__ import annotations

import json
from pathlib import Path

from .errors import LoclensError


class LoadError(LoclensError, ValueError):
    """A release that cannot be loaded as asked; the message says why."""


def _local_manifest(folder: Path) -> dict:
    from .release.manifest import MANIFEST  # imported here: `import loclens` stays light

    path = folder / MANIFEST
    if not path.is_file():
        raise LoadError(f"{folder}: not a complete loclens release (no {MANIFEST}; it is written last)")
    return json.loads(path.read_text())


def _pick(manifest: dict, dataset: str | None, split: str | None, where: str) -> str:
    names = sorted(manifest["datasets"])
    if dataset is None:
        if len(names) != 1:
            raise LoadError(f"{where} holds datasets {names}: pass dataset=")
        dataset = names[0]
    if dataset not in manifest["datasets"]:
        raise LoadError(f"{where} has no dataset {dataset!r} (has {names})")
    splits = sorted(manifest["datasets"][dataset]["splits"])
    if split is not None and split not in splits:
        raise LoadError(f"{where}: dataset {dataset!r} has no split {split!r} (has {splits})")
    return dataset


def load(
    path_or_repo,
    dataset: str | None = None,
    split: str | None = None,
    *,
    streaming: bool = False,
    revision: str | None = None,
    **kwargs,
):
    """Rows of one dataset (config) of a release.

    ``path_or_repo``: a local release folder (with ``manifest.json``) or a Hub dataset repo id.
    ``dataset``: the config (``vqa_rad``, ``slake``, ``sample``); optional when there is one.
    ``split``: ``train``/``test``/...; None gives all splits (a ``DatasetDict``).
    ``streaming``: rows are read lazily (an ``IterableDataset``), shard by shard; nothing is
    converted or cached first. Other keyword arguments go to ``datasets.load_dataset``.
    """
    import datasets

    folder = Path(path_or_repo).expanduser()
    if folder.exists():
        dataset = _pick(_local_manifest(folder), dataset, split, str(folder))
        source = str(folder)
    else:
        source = str(path_or_repo)
    try:
        return datasets.load_dataset(source, dataset, split=split, streaming=streaming, revision=revision, **kwargs)
    except (FileNotFoundError, ConnectionError) as exc:
        hint = " (HF_HUB_OFFLINE is set)" if not folder.exists() and _offline() else ""
        raise LoadError(f"{path_or_repo}: cannot load dataset {dataset!r}{hint}: {exc}") from exc


def _offline() -> bool:
    from huggingface_hub.constants import is_offline_mode

    return is_offline_mode()
