"""Run by test_train_dist.py under torchrun (2 CPU processes, gloo): records what each rank and
each of its DataLoader workers reads, then trains a few DDP steps. Writes rank-<r>.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from torch.utils.data import DataLoader, get_worker_info

from loclens.train import ReleaseStream, default_settings, open_release, train
from loclens.train.loop import setup_distributed


def collate(samples):
    return {
        "keys": [s["key"] for s in samples],
        "image_ids": [s["image_id"] for s in samples],
        "worker": get_worker_info().id,
    }


def observe(release, phase: str, env) -> list[dict]:
    stream = ReleaseStream(release, phase, 2, collate, seed=0, rank=env.rank, world_size=env.world_size)
    stream.set_epoch(0)
    return [
        {"worker": b["worker"], "keys": b["keys"], "image_ids": b["image_ids"]}
        for b in DataLoader(stream, batch_size=None, num_workers=2)
    ]


def main(release_dir: str, out: str, vit: str) -> None:
    env = setup_distributed("cpu")
    release = open_release(release_dir)
    report = {
        "rank": env.rank,
        "world_size": env.world_size,
        "batches": {phase: observe(release, phase, env) for phase in ("align", "vqa")},
    }
    settings = default_settings(
        vision={"backend": "hf", "path": vit}, connector={"factor": 2}, device="cpu", batch_size=2, align={"epochs": 2}
    )
    result = train(settings, "align", release_dir, Path(out) / "align", progress=False)
    report["losses"] = result["losses"]
    report["steps"] = result["steps"]
    # After DDP steps every rank must hold the same weights.
    report["param_sum"] = float(sum(p.double().sum() for p in _trainable(result)))
    Path(out, f"rank-{env.rank}.json").write_text(json.dumps(report))


def _trainable(result):
    return [p for p in result["model"].parameters() if p.requires_grad]


if __name__ == "__main__":
    torch.manual_seed(0)
    main(*sys.argv[1:4])
