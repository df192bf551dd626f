"""Worker processes around the model of a segment job, so the CPU work of a shard uses the
job's cores and the model (a GPU's, typically) never waits for one core.

- **Loaders** (a ``torch.utils.data.DataLoader`` with ``loaders`` worker processes): read and
  decode each image, compute its box prompts and the backend's preprocessing (``prepare``).
  Arrays travel as torch tensors, i.e. through shared memory, not through a pipe; only what
  the model side needs travels (no pixels for a box-prompted backend, which reads the image's
  shape only once it has the preprocessed input).
- **Post-processing** (a process pool of ``post`` workers, CPU device only): boolean masks at the
  working size -> COCO RLE at the image's size -> mask entries. On a GPU the masks never leave
  the device: ``device_rle_counts`` run-length encodes them there and only the run lengths come
  back (one transfer per image), so no pool is needed.

Both are bounded (the DataLoader's ``prefetch_factor`` items per loader, ``2 * post`` pending
images), so a job's memory does not grow with the shard; where /dev/shm is small (containers)
the plan lowers the items in flight, then the loaders, to fit half of it. Processes are forked from the job
(Linux, macOS with fork): the segmenter's ``prepare`` and the prompt sources are inherited, not
pickled, and children never touch CUDA. Where fork is unavailable, or with ``workers=0``, the
job loads in threads of its own process (``run.prefetched``).

How many (``plan``): on CUDA, every core but one loads (the one left drives the GPU: kernel
launches, the device RLE, the cache write) and torch keeps one thread; on a CPU the model is
the bottleneck (its own work is ~10x the rest per image, BENCHMARKS.md), so torch gets all the
threads and one loader per 8 threads (at least one) keeps ahead of it, plus one post worker per
16 loaders.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

#: Shared-memory bytes one loaded image may hold in flight (MedSAM ViT-B's 1024 x 1024 x 3 float32
#: input is 12 MiB; SAM's automatic mode also sends the decoded image): what bounds the loaders
#: where /dev/shm is small (a container's default is 64 MiB).
ITEM_SHM_BYTES = 24 * 2**20
#: Items each loader keeps ready (the DataLoader's prefetch_factor) when shared memory allows.
PREFETCH = 2


@dataclass(frozen=True)
class WorkerPlan:
    loaders: int  # loader processes (0: threads of the job's own process)
    post: int  # post-processing processes (0: in the job's process or on the device)
    torch_threads: int  # intra-op threads of the model in the job's process
    prefetch: int = PREFETCH  # items each loader keeps ready


def available_cpus() -> int:
    """CPUs this process may run on: the scheduler's allotment (SLURM's cpus_per_task, a
    cgroup cpuset, ``taskset``) where the OS reports affinity, else every core."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def shm_free_bytes() -> int | None:
    """Free bytes of the shared memory the loaders' tensors travel through (None: unknown)."""
    try:
        return shutil.disk_usage("/dev/shm").free
    except OSError:
        return None


def fork_available() -> bool:
    return "fork" in multiprocessing.get_all_start_methods()


def plan(threads: int, device, workers: int | None = None) -> WorkerPlan:
    """Worker processes and torch threads for a job of ``threads`` cores on ``device``;
    ``workers`` fixes the number of loaders (0: no worker processes)."""
    cuda = getattr(device, "type", str(device).split(":")[0]) == "cuda"
    threads = max(1, int(threads))
    if workers is None:
        workers = max(1, threads - 1) if cuda else max(1, threads // 8)
    if workers > 0 and not fork_available():
        workers = 0
    prefetch = PREFETCH
    free = shm_free_bytes() if workers > 0 else None
    if free is not None:
        # Half of the free shared memory for the loaders' items in flight: fewer items per
        # loader first, then fewer loaders, then none (threads of the job's own process).
        fits = free // 2 // ITEM_SHM_BYTES
        prefetch = max(1, min(PREFETCH, fits // workers))
        workers = min(workers, fits)
    post = 0 if cuda or workers == 0 else math.ceil(workers / 16)
    return WorkerPlan(loaders=workers, post=post, torch_threads=1 if cuda else threads, prefetch=prefetch)


# --- passing arrays between processes ----------------------------------------------------------


def to_shared(obj):
    """numpy arrays (also inside tuples, lists and dicts) as torch tensors, which
    multiprocessing passes through shared memory instead of pickling their bytes."""
    if isinstance(obj, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(obj))
    if isinstance(obj, tuple):
        return tuple(to_shared(o) for o in obj)
    if isinstance(obj, list):
        return [to_shared(o) for o in obj]
    if isinstance(obj, dict):
        return {k: to_shared(v) for k, v in obj.items()}
    return obj


def from_shared(obj):
    """The inverse of ``to_shared`` (tensors back to numpy views, no copy)."""
    if torch.is_tensor(obj):
        return obj.numpy()
    if isinstance(obj, tuple):
        return tuple(from_shared(o) for o in obj)
    if isinstance(obj, list):
        return [from_shared(o) for o in obj]
    if isinstance(obj, dict):
        return {k: from_shared(v) for k, v in obj.items()}
    return obj


# --- loaders -------------------------------------------------------------------------------------


class _Rows(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict], load: Callable):
        self.rows, self.load = rows, load

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        return to_shared(self.load(self.rows[i]))


def _as_is(item):
    return item


def loaded(load: Callable, rows: list[dict], workers: int, ahead: int = PREFETCH) -> Iterator:
    """``load(row)`` for each row, in order, computed by ``workers`` forked processes, at most
    ``ahead`` items per worker in flight."""
    loader = torch.utils.data.DataLoader(
        _Rows(rows, load),
        batch_size=None,
        shuffle=False,
        num_workers=workers,
        collate_fn=_as_is,
        prefetch_factor=ahead,
        multiprocessing_context="fork",
    )
    for item in loader:
        yield from_shared(item)


# --- post-processing ----------------------------------------------------------------------------


def _post_init() -> None:
    torch.set_num_threads(1)


class Done:
    """A result computed in place, with the ``get()`` of a pool's pending result."""

    def __init__(self, value):
        self.value = value

    def get(self):
        return self.value


class PostPool:
    """``fn(*args)`` in ``workers`` forked processes (tensors passed through shared memory);
    with 0 workers, in this process. ``limit``: results a caller should let be pending before
    collecting the oldest (``2 * workers``)."""

    def __init__(self, fn: Callable, workers: int):
        self.fn = fn
        self.limit = 2 * workers
        self.pool = torch.multiprocessing.get_context("fork").Pool(workers, initializer=_post_init) if workers else None

    def apply(self, *args):
        if self.pool is None:
            return Done(self.fn(*args))
        return self.pool.apply_async(self.fn, to_shared(args))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --- RLE on the device ---------------------------------------------------------------------------


def device_rle_counts(masks: torch.Tensor, size: tuple[int, int] | None = None) -> list[list[int]]:
    """Uncompressed COCO RLE counts (column-major runs, starting with a run of zeros) of N
    boolean masks (N x h x w) computed where the masks are; only the run boundaries are copied
    to the host. ``size`` = (H, W): the masks scaled to it by nearest neighbour first, with
    ``rle.encode_resized``'s mapping (source pixel of (y, x) is (y*h//H, x*w//W))."""
    n, h, w = masks.shape
    height, width = (h, w) if size is None else (int(size[0]), int(size[1]))
    if n == 0:
        return []
    if (h, w) != (height, width):
        rows = torch.arange(height, device=masks.device) * h // height
        cols = torch.arange(width, device=masks.device) * w // width
        masks = masks[:, rows][:, :, cols]
    flat = masks.transpose(1, 2).reshape(n, -1)  # column-major, as COCO RLE counts
    found = (flat[:, 1:] != flat[:, :-1]).nonzero()  # (K, 2): mask index, position; sorted
    host = torch.cat([found, flat[:, :1].to(found.dtype).T.reshape(-1, 1).expand(-1, 2)]).cpu().numpy()
    changes, first = host[: len(host) - n], host[len(host) - n :, 0]
    starts = np.searchsorted(changes[:, 0], np.arange(n + 1))
    total = height * width
    out = []
    for i in range(n):
        bounds = np.concatenate(([0], changes[starts[i] : starts[i + 1], 1] + 1, [total]))
        counts = np.diff(bounds).tolist()
        out.append([0] + counts if first[i] else counts)
    return out
