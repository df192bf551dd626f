"""Run one benchmark stage in this (fresh) process and write its figures and memory peaks.

    python -m loclens.bench.worker SPEC.json RESULT.json

Memory of the stage: ``peak_rss_mb`` is the process's peak resident set (imports, model and
data included: what a workflow job of this stage needs; VmHWM on Linux); ``base_rss_mb`` the resident set after
the imports, before the stage ran; ``arrow_peak_mb`` the peak of Arrow's memory pool;
``cuda_peak_mb`` the peak of torch's CUDA allocator, when CUDA was used.

No allocation tracing (tracemalloc) runs while a stage is timed: it slowed the pure-Python
parts of a stage several times over (LiteMedSAM's load in the segment stage: 32.6 s with it,
6.9 s without), which inflated exactly the "own work" figures the benchmark exists to measure.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path


def _rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def _peak_rss_mb() -> float:
    """The peak resident set of this process. On Linux ru_maxrss keeps the parent's peak across
    fork and exec (a stage started by a 1.5 GB parent would report 1.5 GB), so the high-water
    mark of this process's own address space (VmHWM) is read instead."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def run(spec: dict) -> dict:
    import importlib

    import pyarrow as pa

    from .stages import STAGE_IMPORTS, STAGES

    if spec["stage"] == "naive":
        from . import naive  # noqa: F401  (registers the naive stage; imports the segmenters)
    if spec["stage"] in ("steps", "pipeline"):
        from . import pipeline  # noqa: F401  (registers the stand-in stages)
    fn = STAGES[spec["stage"]]
    for module in STAGE_IMPORTS[spec["stage"]]:
        importlib.import_module(module)
    base = _rss_mb()
    t0 = time.perf_counter()
    figures = fn(spec)
    wall = time.perf_counter() - t0
    memory = {
        "base_rss_mb": base,
        "peak_rss_mb": _peak_rss_mb(),
        "arrow_peak_mb": pa.default_memory_pool().max_memory() / 2**20,
    }
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        memory["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return {"stage": spec["stage"], "wall_s": wall, "figures": figures, "memory": memory}


def main(argv: list[str]) -> int:
    spec_path, result_path = argv
    result = run(json.loads(Path(spec_path).read_text()))
    Path(result_path).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
