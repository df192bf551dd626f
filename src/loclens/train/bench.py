"""Throughput of the data pipeline alone and of a training step, measured the same way, so the
two can be compared side by side (the reader must never be the bottleneck).

``reader_throughput``: samples/s of ``ReleaseStream`` through a ``DataLoader`` (row-group
reads, image decoding, view choice, the vision tower's preprocessing, collation), no model.
``train_step_throughput``: samples/s of forward + backward + optimizer step on batches that
were loaded beforehand, so that no reading is counted.
"""

from __future__ import annotations

import time

import torch
from torch.utils.data import DataLoader

from .data import ReleaseStream
from .loop import _autocast, build_model, make_optimizer, setup_distributed, training_stream


def _stream(settings: dict, release, phase: str, model, epoch: int = 0) -> ReleaseStream:
    stream = training_stream(settings, release, phase, model)
    stream.set_epoch(epoch)
    return stream


def _batches(settings, release, phase, model, n_samples: int):
    """Yield batches, cycling epochs, until ``n_samples`` samples were produced."""
    done, epoch = 0, 0
    loader_workers = settings["num_workers"]
    while done < n_samples:
        stream = _stream(settings, release, phase, model, epoch)
        for batch in DataLoader(stream, batch_size=None, num_workers=loader_workers):
            yield batch
            done += len(batch["keys"])
            if done >= n_samples:
                return
        epoch += 1


def reader_throughput(release, n: int, settings: dict, phase: str = "align", model=None) -> dict:
    """Samples/s of the data pipeline alone, over ``n`` samples (first batch excluded: warm-up)."""
    model = model if model is not None else build_model(settings)
    batches = _batches(settings, release, phase, model, n + settings["batch_size"])
    next(batches)
    t0, count = time.perf_counter(), 0
    for batch in batches:
        count += len(batch["keys"])
    seconds = time.perf_counter() - t0
    return {
        "what": "reader",
        "phase": phase,
        "samples": count,
        "seconds": seconds,
        "samples_per_s": count / seconds,
        "num_workers": settings["num_workers"],
        "batch_size": settings["batch_size"],
    }


def train_step_throughput(release, n_steps: int, settings: dict, phase: str = "align", model=None) -> dict:
    """Samples/s of training steps alone (forward, backward, AdamW step), after one warm-up step."""
    env = setup_distributed(settings["device"])
    model = (model if model is not None else build_model(settings)).to(env.device)
    phase_cfg = settings[phase]
    size = settings["batch_size"]
    # Full batches only (an epoch's last batch can be short), so every timed step is comparable.
    batches = [b for b in _batches(settings, release, phase, model, 4 * (n_steps + 1) * size) if len(b["keys"]) == size]
    if len(batches) < n_steps + 1:
        raise ValueError(f"{release}: fewer than {n_steps + 1} full batches of {size} samples")
    optimizer = make_optimizer(model, settings, phase)
    model.train()  # after the phase said what trains: frozen parts stay in eval mode

    def step(batch):
        with _autocast(env.device):
            loss = model(batch, phase_cfg["loss"], phase_cfg["temperature"])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step(batches[0])
    if env.device.type == "cuda":
        torch.cuda.synchronize(env.device)
    t0, count = time.perf_counter(), 0
    for batch in batches[1 : n_steps + 1]:
        step(batch)
        count += len(batch["keys"])
    if env.device.type == "cuda":
        torch.cuda.synchronize(env.device)
    seconds = time.perf_counter() - t0
    return {
        "what": "train_step",
        "phase": phase,
        "samples": count,
        "seconds": seconds,
        "samples_per_s": count / seconds,
        "device": str(env.device),
        "batch_size": settings["batch_size"],
        "vision": settings["vlm"]["model"] if settings["model"] == "vlm" else settings["vision"]["backend"],
        "pixel_shuffle": settings["connector"]["pixel_shuffle"],
    }
