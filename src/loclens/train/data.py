"""Torch datasets over a release: map-style for random access, a stream for training.

``ReleaseDataset`` (map-style, local or Hub): sample ``i`` reads its row group (a small cache
keeps the last few), for evaluation, inspection or a plain ``DataLoader(shuffle=True)``.

``ReleaseStream`` (iterable, what training uses, local or Hub): per epoch, the row groups are
permuted with ``(seed, epoch)``; the concatenated samples are cut into ``world_size`` equal
contiguous ranges (equal, so that DDP ranks take the same number of steps); the pieces of row
groups in a rank's range are dealt round-robin to its DataLoader workers. Each row group is
therefore read by one worker of one rank (a row group straddling two ranks' ranges is read by
both, each using its own rows). Workers shuffle within windows of ``shuffle_units`` row groups
and yield ready batches, so a batch never waits on another worker's row group. (Resuming
mid-epoch, the rest of that one epoch is dealt to workers by batch instead, see
``worker_batches``.)
"""

from __future__ import annotations

import random
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from ..provenance import seeded_int
from ..schema import IMAGE_COLUMNS, VIEW_COLUMNS
from .reader import Release, Unit
from .samples import TEXT_COLUMNS, SampleRef, make_sample, unit_refs

Transform = Callable[[dict], dict]


@dataclass(frozen=True)
class Piece:
    """Samples ``[start, stop)`` of one unit's sample list."""

    unit: int
    start: int
    stop: int


def rank_pieces(counts: list[int], seed: int, epoch: int, rank: int, world_size: int) -> list[Piece]:
    """The pieces of units whose samples form ``rank``'s equal share of this epoch."""
    order = list(range(len(counts)))
    random.Random(seeded_int(seed, epoch, "units")).shuffle(order)
    share = sum(counts) // world_size
    lo, hi = rank * share, (rank + 1) * share
    pieces, offset = [], 0
    for u in order:
        a, b = max(lo, offset), min(hi, offset + counts[u])
        if a < b:
            pieces.append(Piece(u, a - offset, b - offset))
        offset += counts[u]
    return pieces


def round_robin(lists: list[list]) -> list:
    """Items in the order a DataLoader yields its workers' batches: one from each worker in
    turn, passing over workers that are exhausted."""
    out: list = []
    k = 0
    while any(k < len(x) for x in lists):
        out.extend(x[k] for x in lists if k < len(x))
        k += 1
    return out


class _UnitCache:
    """The last few decoded-on-demand row groups of one process."""

    def __init__(self, release: Release, size: int):
        self.release, self.size = release, size
        self.tables: OrderedDict[int, list[dict]] = OrderedDict()

    def rows(self, u: int, columns: list[str]) -> list[dict]:
        if u not in self.tables:
            self.tables[u] = self.release.read(self.release.units[u], columns).to_pylist()
            while len(self.tables) > self.size:
                self.tables.popitem(last=False)
        self.tables.move_to_end(u)
        return self.tables[u]


class _Samples:
    """Shared by both datasets: which samples exist, and how one is made."""

    def __init__(
        self, release: Release, phase: str, seed: int, views, views_per_sample: int, transform, cache_units: int
    ):
        unknown = set(views) - set(VIEW_COLUMNS)
        if unknown:
            raise ValueError(f"unknown lens view column(s) {sorted(unknown)}; known: {VIEW_COLUMNS}")
        self.release, self.phase, self.seed = release, phase, seed
        self.views, self.k = tuple(views), views_per_sample
        self.transform = transform
        self.refs = unit_refs(release, phase)
        self.columns = TEXT_COLUMNS + ["image", *(c for c in VIEW_COLUMNS if c in self.views and self.k > 0)]
        self.cache_units = cache_units
        self.epoch = 0
        self._cache: _UnitCache | None = None

    def make(self, ref: SampleRef) -> dict:
        if self._cache is None or self._cache.release is not self.release:
            self._cache = _UnitCache(self.release, self.cache_units)
        unit: Unit = self.release.units[ref.unit]
        row = self._cache.rows(ref.unit, self.columns)[ref.row]
        where = f"{unit.file} (row group {unit.row_group})"
        sample = make_sample(row, ref, self.seed, self.epoch, self.views, self.k, where)
        return self.transform(sample) if self.transform else sample

    def __getstate__(self):
        return {**self.__dict__, "_cache": None}


class ReleaseDataset(Dataset):
    """Map-style: every sample of a release split, in (unit, row, question) order."""

    def __init__(
        self,
        release: Release,
        phase: str,
        seed: int = 0,
        views=VIEW_COLUMNS,
        views_per_sample: int = 2,
        transform: Transform | None = None,
        cache_units: int = 4,
    ):
        self.samples = _Samples(release, phase, seed, views, views_per_sample, transform, cache_units)
        self.index = [ref for refs in self.samples.refs for ref in refs]

    def set_epoch(self, epoch: int) -> None:
        self.samples.epoch = epoch

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict:
        return self.samples.make(self.index[i])


class ReleaseStream(IterableDataset):
    """Batches of this rank's share of an epoch, split across DataLoader workers by row group.

    Use with ``DataLoader(stream, batch_size=None, num_workers=W)``; call ``set_epoch`` before
    each epoch (``skip_batches`` resumes mid-epoch without decoding the skipped batches).
    """

    def __init__(
        self,
        release: Release,
        phase: str,
        batch_size: int,
        collate: Callable[[list[dict]], dict],
        seed: int = 0,
        views=VIEW_COLUMNS,
        views_per_sample: int = 2,
        transform: Transform | None = None,
        rank: int = 0,
        world_size: int = 1,
        shuffle_units: int = 4,
    ):
        self.samples = _Samples(release, phase, seed, views, views_per_sample, transform, cache_units=shuffle_units)
        self.counts = [len(r) for r in self.samples.refs]
        if sum(self.counts) < world_size:
            raise ValueError(
                f"{release.location}: {sum(self.counts)} samples cannot be shared by {world_size} processes"
            )
        self.batch_size, self.collate = batch_size, collate
        self.rank, self.world_size, self.shuffle_units = rank, world_size, shuffle_units
        self.skip_batches = 0

    @property
    def samples_per_rank(self) -> int:
        return sum(self.counts) // self.world_size

    def batches_per_epoch(self) -> int:
        """Batches every rank is guaranteed to yield: ranks step in lockstep for this many."""
        return self.samples_per_rank // self.batch_size

    def set_epoch(self, epoch: int, skip_batches: int = 0) -> None:
        self.samples.epoch = epoch
        self.skip_batches = skip_batches

    def worker_order(self, worker: int, num_workers: int) -> list[SampleRef]:
        """The samples one worker yields this epoch, in order."""
        s = self.samples
        pieces = rank_pieces(self.counts, s.seed, s.epoch, self.rank, self.world_size)[worker::num_workers]
        order = []
        for w0 in range(0, len(pieces), self.shuffle_units):
            window = [ref for p in pieces[w0 : w0 + self.shuffle_units] for ref in s.refs[p.unit][p.start : p.stop]]
            random.Random(seeded_int(s.seed, s.epoch, self.rank, worker, w0, "shuffle")).shuffle(window)
            order.extend(window)
        return order

    def worker_batches(self, worker: int, num_workers: int) -> list[list[SampleRef]]:
        """This worker's batches. From the start of an epoch, its own row groups; resuming after
        ``skip_batches``, the rest of the epoch's DataLoader order dealt out again so that a
        fresh DataLoader (which starts again at worker 0) yields exactly that rest."""

        def batches(order):
            return [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]

        if self.skip_batches == 0:
            return batches(self.worker_order(worker, num_workers))
        per_worker = [batches(self.worker_order(w, num_workers)) for w in range(num_workers)]
        return round_robin(per_worker)[self.skip_batches :][worker::num_workers]

    def __iter__(self):
        info = get_worker_info()
        worker, num_workers = (0, 1) if info is None else (info.id, info.num_workers)
        for refs in self.worker_batches(worker, num_workers):
            yield self.collate([self.samples.make(ref) for ref in refs])


def default_collate_images(samples: list[dict]) -> dict:
    """Collate for transforms that turn ``images`` into equal-shape tensors (V_i, C, H, W):
    pads the view axis to the batch's largest V and says which slots are present."""
    n_views = max(len(s["pixels"]) for s in samples)
    first = samples[0]["pixels"]
    pixels = first.new_zeros((len(samples), n_views, *first.shape[1:]))
    present = torch.zeros((len(samples), n_views), dtype=torch.bool)
    view_ids = torch.zeros((len(samples), n_views), dtype=torch.long)
    for i, s in enumerate(samples):
        v = len(s["pixels"])
        pixels[i, :v], present[i, :v] = s["pixels"], True
        view_ids[i, :v] = torch.tensor([IMAGE_COLUMNS.index(c) for c in s["columns"]])
    return {
        "pixels": pixels,
        "present": present,
        "view_ids": view_ids,
        "texts": [s["text"] for s in samples],
        "image_ids": [s["image_id"] for s in samples],
        "keys": [s["key"] for s in samples],
    }
