"""Reading a released dataset for training: the row groups of its Parquet shards.

A release is a folder (or a Hugging Face dataset repo) in the layout the release stage writes:
``<dataset>/<split>-0000k-of-0000N.parquet`` plus ``manifest.json``, written last. Training reads
nothing else. The unit of reading, shuffling and (rank, worker) assignment is one Parquet row
group (the release writes small ones, so a unit is a few MB of images): a process reads only
the row groups dealt to it, and reads each one once.

Hub repos (``hf://datasets/<org>/<name>[@revision]``) are read through ``HfFileSystem`` with the
same pyarrow calls, which is how ``datasets`` streams Parquet too: only the footers and the row
groups a process needs travel, never the whole repo.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..errors import LoclensError
from ..imageio import load_rgb

HF_PREFIX = "hf://"
MANIFEST = "manifest.json"


class ReleaseError(LoclensError, ValueError):
    """A release that cannot be trained on; the message names the location and the problem."""


@dataclass(frozen=True)
class Unit:
    """One Parquet row group of one shard."""

    file: str
    row_group: int
    num_rows: int


@dataclass
class Release:
    """The shards of one split of a release, as row-group units.

    ``fs`` is None for a local folder (pyarrow opens paths itself) and an fsspec filesystem for
    a Hub repo. Open Parquet files are cached per process (forked DataLoader workers open their own).
    """

    location: str
    split: str
    files: list[str]
    units: list[Unit]
    fs: Any = None  # an fsspec filesystem (the Hub's) or None for local files
    _open: dict = field(default_factory=dict, repr=False)

    def parquet(self, file: str) -> pq.ParquetFile:
        key = (os.getpid(), file)
        if key not in self._open:
            try:
                source = file if self.fs is None else self.fs.open(file, "rb")
                self._open[key] = pq.ParquetFile(source)
            except (OSError, pa.ArrowInvalid) as exc:
                raise ReleaseError(f"{file}: cannot read Parquet shard ({exc})") from None
        return self._open[key]

    def read(self, unit: Unit, columns: list[str] | None = None) -> pa.Table:
        """The rows of one unit (only ``columns``; nested leaves as ``qa.list.element.qid``)."""
        try:
            return self.parquet(unit.file).read_row_group(unit.row_group, columns=columns)
        except (OSError, pa.ArrowInvalid, KeyError) as exc:
            raise ReleaseError(f"{unit.file}: cannot read row group {unit.row_group} ({exc})") from None

    @property
    def num_rows(self) -> int:
        return sum(u.num_rows for u in self.units)

    def __getstate__(self):
        # Open files do not cross process boundaries (DataLoader workers, spawn).
        return {**self.__dict__, "_open": {}}


def _hub_fs_and_root(location: str):
    """``hf://datasets/org/name[@rev]`` -> (HfFileSystem, "datasets/org/name[@rev]")."""
    from huggingface_hub import HfFileSystem, constants

    root = location[len(HF_PREFIX) :].rstrip("/")
    if not root.startswith("datasets/") or root.count("/") < 2:
        raise ReleaseError(f"{location}: a Hub release is written hf://datasets/<org>/<name>[@revision]")
    if constants.HF_HUB_OFFLINE:
        raise ReleaseError(
            f"{location}: HF_HUB_OFFLINE is set, so the Hub cannot be reached; unset it, or download the "
            "release (huggingface-cli download --repo-type dataset ...) and train on the local folder"
        )
    return HfFileSystem(), root


def _list(fs, root: str, pattern: str) -> list[str]:
    if fs is None:
        return sorted(str(p) for p in Path(root).glob(pattern))
    return sorted(fs.glob(f"{root}/{pattern}"))


def _exists(fs, path: str) -> bool:
    if fs is None:
        return Path(path).is_file()
    try:  # not fs.exists(), which would also answer False when the network is down
        fs.info(path)
        return True
    except FileNotFoundError:
        return False


def open_release(location: str | os.PathLike, split: str = "train", datasets: list[str] | None = None) -> Release:
    """The row-group units of ``split`` for the given release configs (all when None)."""
    location = str(location)
    if location.startswith(HF_PREFIX):
        fs, root = _hub_fs_and_root(location)
    else:
        fs, root = None, str(Path(location).expanduser())
        if not Path(root).is_dir():
            raise ReleaseError(f"{location}: release folder not found")
    return open_release_on(fs, root, split, datasets, location)


def open_release_on(
    fs, root: str, split: str = "train", datasets: list[str] | None = None, location: str | None = None
) -> Release:
    """``open_release`` on any fsspec filesystem (None: local paths read by pyarrow directly)."""
    location = location or root
    try:
        if not _exists(fs, f"{root}/{MANIFEST}"):
            raise ReleaseError(
                f"{location}: no {MANIFEST}, so the release is incomplete (the release stage writes it last)"
            )
        configs = sorted({Path(f).parent.name for f in _list(fs, root, "*/*-*-of-*.parquet")})
        wanted = configs if datasets is None else list(datasets)
        unknown = sorted(set(wanted) - set(configs))
        if unknown:
            raise ReleaseError(f"{location}: no dataset(s) {unknown} in the release (it has {configs})")
        files = [f for d in wanted for f in _list(fs, root, f"{d}/{split}-*-of-*.parquet")]
    except ReleaseError:
        raise
    except Exception as exc:  # network / auth errors of the Hub client
        raise ReleaseError(f"{location}: cannot list the release ({exc.__class__.__name__}: {exc})") from None
    if not files:
        raise ReleaseError(f"{location}: no '{split}' shards for dataset(s) {wanted}")
    release = Release(location=location, split=split, files=files, units=[], fs=fs)
    for file in files:
        meta = release.parquet(file).metadata
        release.units.extend(Unit(file, k, meta.row_group(k).num_rows) for k in range(meta.num_row_groups))
    return release


def decode_image(cell: dict | None, name: str):
    """An Image cell of a release row -> HxWx3 uint8 array (None stays None)."""
    if cell is None:
        return None
    return load_rgb(cell["bytes"], name)
