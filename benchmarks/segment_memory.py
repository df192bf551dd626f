"""Peak memory of one segmentation job as the image grows: does it stay bounded?

For each size, writes a one-image dataset in the VQA-RAD layout (a phantom scaled up, so even a
large PNG is cheap to make), ingests it, runs the real ``loclens segment`` job (LiteMedSAM, CPU)
in a child process, and prints that process's peak RSS (from ``wait4``, whatever code runs).

    python benchmarks/segment_memory.py --sizes 512x512 4000x3000 8000x6000 [--read-max-side 1024]

``--read-max-side``: the memory setting ``segment.read_max_side`` (default: off, full resolution).

To compare with other code, put its ``src`` first on PYTHONPATH.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from loclens.config import validate
from loclens.ingest import run_ingest
from loclens.sources.sample import _phantom
from loclens.sources.vqa_rad import IMAGE_DIR, JSON_NAME
from loclens.stages import segment_settings


def make_dataset(root: Path, width: int, height: int) -> None:
    gray, _ = _phantom("abdomen", 400, np.random.default_rng(0))
    img = Image.fromarray(np.round(gray * 255).astype(np.uint8)).resize((width, height), Image.Resampling.NEAREST)
    (root / IMAGE_DIR).mkdir(parents=True)
    img.save(root / IMAGE_DIR / "scan.png", compress_level=1)
    record = {
        "qid": 1,
        "image_name": "scan.png",
        "question": "Is there a liver?",
        "answer": "yes",
        "answer_type": "CLOSED",
        "phrase_type": "freeform",
        "question_type": "PRES",
    }
    (root / JSON_NAME).write_text(json.dumps([record]))


def measure(width: int, height: int, work: Path, read_max_side: int | None = None) -> dict:
    root = work / f"{width}x{height}"
    make_dataset(root / "data", width, height)
    config = validate(
        {
            "datasets": {"scan": {"source": "vqa_rad", "path": str(root / "data")}},
            "segment": {"read_max_side": read_max_side},
        }
    )
    run_ingest("scan", config, root / "ingest")
    cmd = [
        sys.executable,
        "-m",
        "loclens.cli",
        "segment",
        "--records",
        str(root / "ingest" / "records.jsonl"),
        "--plan",
        str(root / "ingest" / "plan.json"),
        "--shard",
        "0",
        "--segmenter",
        "medsam",
        "--settings",
        json.dumps(segment_settings(config, "medsam")),
        "--device",
        "cpu",
        "--out",
        str(root / "masks.parquet"),
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"segment failed for {width}x{height}: {proc.stderr.read()[-2000:]}")
    return {
        "size": f"{width}x{height}",
        "megapixels": round(width * height / 1e6, 1),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "seconds": round(seconds, 1),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["512x512", "4000x3000"], help="WIDTHxHEIGHT ...")
    parser.add_argument("--read-max-side", type=int, default=None, help="segment.read_max_side (default: off)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(*map(int, s.lower().split("x")), Path(tmp), args.read_max_side) for s in args.sizes]
    print(f"{'size':>12} {'Mpx':>6} {'peak RSS MB':>12} {'seconds':>8}")
    for r in rows:
        print(f"{r['size']:>12} {r['megapixels']:>6} {r['peak_rss_mb']:>12} {r['seconds']:>8}")
    base = rows[0]["peak_rss_mb"]
    for r in rows[1:]:
        print(f"{r['size']}: {r['peak_rss_mb'] - base:+.0f} MB over {rows[0]['size']}")


if __name__ == "__main__":
    main()
