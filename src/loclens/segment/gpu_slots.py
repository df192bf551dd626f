"""Give each concurrent GPU job on one machine its own device.

Snakemake's ``resources: gpu=1`` only limits how many GPU jobs run at once; it does not tell a
job *which* GPU to use, and does not set ``CUDA_VISIBLE_DEVICES``. With ``--device auto`` and
several visible GPUs, a job therefore claims the first free slot: it takes an exclusive,
non-blocking ``flock`` on ``<lock dir>/gpu-<id>.lock`` for each visible device in turn and keeps
the first one it gets for the rest of the process. The kernel drops the lock when the process
ends, however it ends, so a killed job never leaves a slot taken.

As long as the workflow's ``--resources gpu=N`` does not exceed the number of GPUs, a free slot
always exists; jobs of another workflow on the same machine share the same lock files
(``LOCLENS_GPU_LOCK_DIR``), and wait for a slot for up to ``LOCLENS_GPU_WAIT_S`` seconds.
On a cluster the scheduler already restricts ``CUDA_VISIBLE_DEVICES`` to the job's GPU, so
exactly one device is visible and no lock is needed.
"""

from __future__ import annotations

import fcntl
import os
import tempfile
import time
from pathlib import Path
from typing import TextIO

from ..errors import LoclensError

#: Lock files held by this process (closing one releases its slot).
_HELD: dict[str, TextIO] = {}


class NoFreeGPU(LoclensError, RuntimeError):
    """Every GPU slot stayed taken by other loclens jobs for the whole wait; the message names the
    lock folder and how to request fewer GPUs."""


def default_lock_dir() -> Path:
    env = os.environ.get("LOCLENS_GPU_LOCK_DIR")
    return Path(env) if env else Path(tempfile.gettempdir()) / f"loclens-gpu-locks-{os.getuid()}"


def visible_ids(n_devices: int, visible: str | None = None) -> list[str]:
    """Names of the visible devices, stable across processes: the ``CUDA_VISIBLE_DEVICES``
    entries where that is set (so two jobs restricted to "2,3" lock GPUs 2 and 3, not 0 and 1),
    else the indices."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") if visible is None else visible
    ids = [v.strip() for v in visible.split(",") if v.strip()] if visible else []
    return ids[:n_devices] if len(ids) >= n_devices else [str(i) for i in range(n_devices)]


def try_acquire(n_devices: int, lock_dir: Path | None = None, visible: str | None = None) -> int | None:
    """Index (into the visible devices) of a slot this process now holds, or None if all are taken."""
    lock_dir = lock_dir or default_lock_dir()
    lock_dir.mkdir(parents=True, exist_ok=True)
    for index, dev in enumerate(visible_ids(n_devices, visible)):
        path = str(lock_dir / f"gpu-{dev}.lock")
        if path in _HELD:
            continue
        fh = open(path, "a+")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            fh.close()
            continue
        fh.seek(0)
        fh.truncate()
        fh.write(f"{os.getpid()}\n")
        fh.flush()
        _HELD[path] = fh
        return index
    return None


def acquire(n_devices: int, lock_dir: Path | None = None, timeout_s: float | None = None, poll_s: float = 2.0) -> int:
    """Wait for a free slot; raise NoFreeGPU with the lock folder named after ``timeout_s``."""
    if timeout_s is None:
        timeout_s = float(os.environ.get("LOCLENS_GPU_WAIT_S", "3600"))
    deadline = time.monotonic() + timeout_s
    while True:
        slot = try_acquire(n_devices, lock_dir)
        if slot is not None:
            return slot
        if time.monotonic() >= deadline:
            raise NoFreeGPU(
                f"all {n_devices} GPUs are taken by other loclens jobs (locks in {lock_dir or default_lock_dir()}) "
                f"after waiting {timeout_s:.0f}s; run with --resources gpu=N where N is at most the number of GPUs"
            )
        time.sleep(poll_s)


def release_all() -> None:
    for fh in _HELD.values():
        fh.close()
    _HELD.clear()
