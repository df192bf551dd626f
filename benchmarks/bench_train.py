"""Training throughput: the data pipeline alone vs a training step, side by side, one run.

    python benchmarks/bench_train.py --release results/release [--device cpu|cuda] \
        [--batch-size 4] [--steps 3] [--samples 64] [--num-workers 0 2] [--vision litemedsam|hf --vision-path DIR]

Prints one JSON line per measurement and a summary: reader samples/s for each worker count,
training-step samples/s (forward + backward + AdamW on pre-loaded batches), and their ratio.
A ratio above 1 means the reader keeps up with training with room to spare. Works on CPU (small
numbers) and on a GPU box (the lead's check: --device cuda --batch-size 32 --steps 20).
"""

from __future__ import annotations

import argparse
import json
import sys

from loclens.bench.runner import machine
from loclens.train import build_model, default_settings
from loclens.train.bench import reader_throughput, train_step_throughput


def replicate_release(release: str, copies: int, phase: str) -> str:
    """A temporary release whose train split repeats the real rows ``copies`` times (new image
    ids, same images), written with the release's row-group size, so the reader is timed over
    many row groups instead of restarting epochs of a few rows."""
    import shutil
    import tempfile
    from pathlib import Path

    import pyarrow as pa
    import pyarrow.parquet as pq

    from loclens.release.shards import ROW_GROUP_ROWS

    out = Path(tempfile.mkdtemp(prefix="loclens-bench-"))
    shutil.copy(Path(release) / "manifest.json", out / "manifest.json")
    for folder in sorted(p for p in Path(release).iterdir() if p.is_dir() and list(p.glob("train-*.parquet"))):
        table = pa.concat_tables(pq.read_table(f) for f in sorted(folder.glob("train-*.parquet")))
        ids = table.column("image_id").to_pylist()
        parts = [table.set_column(0, "image_id", pa.array([f"{i}-{k}" for i in ids])) for k in range(copies)]
        (out / folder.name).mkdir()
        pq.write_table(
            pa.concat_tables(parts), out / folder.name / "train-00000-of-00001.parquet", row_group_size=ROW_GROUP_ROWS
        )
    return str(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--release", required=True)
    p.add_argument("--phase", default="align", choices=["align", "vqa"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--samples", type=int, default=64, help="samples timed through the reader")
    p.add_argument("--num-workers", type=int, nargs="+", default=[0, 2])
    p.add_argument("--vision", default="litemedsam", choices=["litemedsam", "hf"])
    p.add_argument("--vision-path")
    p.add_argument("--no-pixel-shuffle", action="store_true")
    p.add_argument(
        "--replicate",
        type=int,
        default=1,
        help="time the reader on a copy of the release with its rows repeated K times (tiny releases)",
    )
    args = p.parse_args(argv)
    if args.replicate > 1:
        args.release = replicate_release(args.release, args.replicate, args.phase)

    vision = {"backend": args.vision, "path": args.vision_path}
    base = dict(
        vision=vision,
        device=args.device,
        batch_size=args.batch_size,
        connector={"pixel_shuffle": not args.no_pixel_shuffle},
    )
    settings = default_settings(**base)
    model = build_model(settings)
    print(json.dumps(machine(args.device)), flush=True)
    readers = []
    for workers in args.num_workers:
        r = reader_throughput(
            args.release, args.samples, default_settings(**base, num_workers=workers), args.phase, model
        )
        readers.append(r)
        print(json.dumps(r))
    step = train_step_throughput(args.release, args.steps, settings, args.phase, model)
    print(json.dumps(step))
    best = max(r["samples_per_s"] for r in readers)
    print(
        json.dumps(
            {
                "summary": True,
                "reader_samples_per_s": {r["num_workers"]: round(r["samples_per_s"], 2) for r in readers},
                "train_step_samples_per_s": round(step["samples_per_s"], 3),
                "reader_over_train": round(best / step["samples_per_s"], 1),
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
