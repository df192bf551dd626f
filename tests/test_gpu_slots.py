"""One GPU per concurrent job on a multi-GPU machine: lock-file slots, tested on the CPU."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from loclens.segment import gpu_slots, resolve_device

HOLD = """
import sys, time
from pathlib import Path
from loclens.segment import gpu_slots
slot = gpu_slots.try_acquire(int(sys.argv[1]), Path(sys.argv[2]), visible=sys.argv[3])
print(slot, flush=True)
time.sleep(float(sys.argv[4]))
"""


@pytest.fixture(autouse=True)
def _release():
    yield
    gpu_slots.release_all()


def test_each_holder_gets_its_own_slot(tmp_path):
    assert gpu_slots.try_acquire(2, tmp_path, visible="") == 0
    assert gpu_slots.try_acquire(2, tmp_path, visible="") == 1
    assert gpu_slots.try_acquire(2, tmp_path, visible="") is None
    gpu_slots.release_all()
    assert gpu_slots.try_acquire(2, tmp_path, visible="") == 0


def test_concurrent_jobs_get_distinct_gpus_and_slots_free_when_a_job_ends(tmp_path):
    procs = [
        subprocess.Popen([sys.executable, "-c", HOLD, "3", str(tmp_path), "", "3"], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    slots = sorted(int(p.stdout.readline()) for p in procs)
    assert slots == [0, 1, 2]
    assert gpu_slots.try_acquire(3, tmp_path, visible="") is None  # all held by the jobs
    for p in procs:
        p.kill()  # even a killed job releases its GPU: the kernel drops the lock
        p.wait()
    assert gpu_slots.try_acquire(3, tmp_path, visible="") == 0


def test_locks_are_named_by_the_visible_device_ids(tmp_path):
    assert gpu_slots.visible_ids(2, "2,3") == ["2", "3"]
    assert gpu_slots.try_acquire(2, tmp_path, visible="2,3") == 0
    assert (tmp_path / "gpu-2.lock").exists() and not (tmp_path / "gpu-0.lock").exists()
    # A job restricted to GPU 3 only does not collide with the holder of GPU 2.
    other = subprocess.run([sys.executable, "-c", HOLD, "1", str(tmp_path), "3", "0"], capture_output=True, text=True)
    assert other.stdout.strip() == "0"


def test_waiting_for_a_slot_times_out_with_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert gpu_slots.acquire(1, tmp_path, timeout_s=1) == 0
    t0 = time.monotonic()
    with pytest.raises(gpu_slots.NoFreeGPU, match=r"all 1 GPUs are taken .*--resources gpu=N"):
        gpu_slots.acquire(1, tmp_path, timeout_s=0.5, poll_s=0.1)
    assert time.monotonic() - t0 < 5


def test_auto_device_without_cuda_is_the_cpu(monkeypatch):
    import torch

    # Whatever this machine has: the test is about a machine without CUDA.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    with pytest.raises(RuntimeError, match="CUDA is not available"):
        resolve_device("cuda:1")


def test_auto_device_with_one_gpu_is_that_gpu_without_a_lock(monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("LOCLENS_GPU_LOCK_DIR", str(tmp_path / "locks"))
    assert resolve_device("auto") == "cuda:0"
    assert not (tmp_path / "locks").exists(), "one visible GPU needs no slot"
