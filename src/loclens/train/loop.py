"""The training loop of one phase: AdamW, autocast, gradient accumulation, DDP, checkpoints.

Run as one process (``loclens train``) or one per GPU/CPU slot under torchrun (DDP over nccl on
CUDA, gloo on CPU). Every rank reads only its share of the release (see ``data.ReleaseStream``)
and all ranks take the same number of steps. Outputs, under ``out_dir``:
``checkpoints/step-N/`` (resumed automatically), ``final/`` (the phase's model), ``losses.csv``
and ``losses.png``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..atomic import write_bytes, write_text
from ..provenance import config_hash, seeded_int
from ..segment import resolve_device
from . import checkpoint as ckpt
from .data import ReleaseStream
from .reader import open_release
from .samples import PHASES, check_phase

log = logging.getLogger(__name__)

LOSS_COLUMNS = ("step", "epoch", "loss", "samples", "seconds")


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: str) -> Dist:
    """Read torchrun's environment; one process without it. CUDA ranks use their local GPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(resolve_device(device))
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, dev)


def build_model(settings: dict):
    """The model named by ``settings['model']``, initialised from the seed alone."""
    torch.manual_seed(seeded_int(settings["seed"], "init") % (2**63))
    if settings["model"] == "vlm":
        from .vlm import VLMLens

        return VLMLens(settings)
    from .model import LensAligner

    return LensAligner(settings)


def make_optimizer(model, settings: dict, phase: str) -> torch.optim.AdamW:
    """AdamW over what the phase trains. A lens VLM trains the components ``train.<phase>.trainable``
    names, one parameter group each with its learning rate from ``train.vlm.lr`` (null = ``lr``)."""
    lr, wd = settings["lr"], settings["weight_decay"]
    if hasattr(model, "configure_phase"):
        model.configure_phase(settings[phase]["trainable"])
        return torch.optim.AdamW(model.param_groups(lr, wd, settings["vlm"]["lr"]), lr=lr, weight_decay=wd)
    return torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=lr, weight_decay=wd)


#: Settings that may change between an interrupted run and its resumption (they do not change
#: what the next step computes): how long to train, how often to save, where.
RESUMABLE_CHANGES = ("max_steps", "epochs", "checkpoint_every", "keep_checkpoints", "device", "release")


def run_identity(settings: dict, phase: str, release: str, init, world_size: int) -> str:
    """Hash of everything that shapes a run's trajectory; a checkpoint resumes only under the same."""
    kept = {k: v for k, v in settings.items() if k not in RESUMABLE_CHANGES and k not in PHASES}
    phase_cfg = {k: v for k, v in settings[phase].items() if k not in RESUMABLE_CHANGES}
    return config_hash(
        {
            "settings": kept,
            "phase": phase,
            "phase_cfg": phase_cfg,
            "release": str(release),
            "init": str(init) if init else None,
            "world_size": world_size,
        }
    )


def _resume_point(out_dir: Path, identity: str, env: Dist) -> Path | None:
    """The newest checkpoint of this very run; checkpoints of other settings are set aside."""
    existing = ckpt.list_checkpoints(out_dir)
    theirs = json.loads((existing[-1] / ckpt.STATE_FILE).read_text()).get("identity") if existing else None
    if env.world_size > 1:
        dist.barrier()  # every rank has decided before rank 0 may move the folder
    if not existing:
        return None
    if theirs == identity:
        return existing[-1]
    if env.main:
        stale = out_dir / f"{ckpt.CHECKPOINTS}-stale-{theirs}"
        log.warning("%s: checkpoints were made with other settings; moved to %s, starting afresh", out_dir, stale)
        shutil.rmtree(stale, ignore_errors=True)
        os.replace(out_dir / ckpt.CHECKPOINTS, stale)
    if env.world_size > 1:
        dist.barrier()
    return None


def _autocast(device: torch.device):
    # bf16 on CUDA (the paper's GPUs); CPU stays in fp32, where bf16 is slow and lossy.
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else nullcontext()


def _read_losses(path: Path, upto: int) -> list[dict]:
    """Loss rows of an interrupted run up to its checkpoint, so a resumed CSV has no repeats."""
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [r for r in csv.DictReader(fh) if int(r["step"]) <= upto]


def write_losses(out_dir: Path, rows: list[dict], phase: str) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOSS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    write_text(out_dir / "losses.csv", buf.getvalue())
    plot_losses(out_dir / "losses.png", rows, phase)


def plot_losses(path: Path, rows: list[dict], phase: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([int(r["step"]) for r in rows], [float(r["loss"]) for r in rows], lw=1)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(f"loclens {phase}")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_bytes(path, buf.getvalue())


def training_stream(settings: dict, release, phase: str, model, rank: int = 0, world_size: int = 1) -> ReleaseStream:
    """The batches a training run of ``phase`` reads: ``release`` (a location, or an opened
    release) with the run's split, views and batch size, prepared and collated by ``model``."""
    opened = (
        open_release(release, settings["split"], settings["datasets"]) if isinstance(release, str | Path) else release
    )
    return ReleaseStream(
        opened,
        phase,
        settings["batch_size"],
        model.collate,
        seed=settings["seed"],
        views=settings["views"],
        views_per_sample=settings["views_per_sample"],
        transform=model.prepare,
        rank=rank,
        world_size=world_size,
        shuffle_units=settings["shuffle_units"],
    )


def train(
    settings: dict, phase: str, release: str, out_dir: str | Path, init: str | Path | None = None, progress: bool = True
) -> dict:
    """Train one phase. ``settings`` is the ``train:`` config section plus ``seed``.

    ``init`` is a model folder to start from (phase 2 starts from phase 1's ``final``). A
    checkpoint in ``out_dir`` takes precedence: the run resumes where it stopped.
    """
    check_phase(phase)
    phase_cfg = settings[phase]
    out_dir = Path(out_dir)
    env = setup_distributed(settings["device"])
    model = build_model(settings)
    if init is not None:
        ckpt.load_weights(init, model)
    model.to(env.device)
    optimizer = make_optimizer(model, settings, phase)
    stream = training_stream(settings, release, phase, model, rank=env.rank, world_size=env.world_size)
    accum = settings["grad_accum"]
    steps_per_epoch = stream.batches_per_epoch() // accum
    if steps_per_epoch == 0:
        raise ValueError(
            f"{release}: {stream.samples_per_rank} samples per process are fewer than one step "
            f"(batch_size {settings['batch_size']} x grad_accum {accum})"
        )
    total = steps_per_epoch * phase_cfg["epochs"]
    if phase_cfg["max_steps"]:
        total = min(total, phase_cfg["max_steps"])

    identity = run_identity(settings, phase, release, init, env.world_size)
    state: dict[str, Any] = {"step": 0, "epoch": 0, "batch": 0, "identity": identity}
    resume = _resume_point(out_dir, identity, env)
    if resume is not None:
        state = ckpt.load_checkpoint(resume, model, optimizer)
        log.info("resuming %s from %s", phase, resume)
    rows = _read_losses(out_dir / "losses.csv", state["step"])

    net = model
    if env.world_size > 1:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[env.device.index] if env.device.type == "cuda" else None
        )
    loader = DataLoader(
        stream, batch_size=None, num_workers=settings["num_workers"], pin_memory=env.device.type == "cuda"
    )
    model.train()
    bar = tqdm(total=total, initial=state["step"], desc=f"train {phase}", disable=not (progress and env.main))
    t0 = time.perf_counter()
    while state["step"] < total:
        stream.set_epoch(state["epoch"], skip_batches=state["batch"])
        batches = iter(loader)
        while state["batch"] < steps_per_epoch * accum and state["step"] < total:
            loss_sum, samples = 0.0, 0
            for micro in range(accum):
                batch = next(batches)
                sync = micro == accum - 1 or env.world_size == 1
                with nullcontext() if sync else net.no_sync(), _autocast(env.device):
                    loss = net(batch, phase_cfg["loss"], phase_cfg["temperature"])
                (loss / accum).backward()
                loss_sum += loss.item() / accum
                samples += len(batch["keys"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state["step"] += 1
            state["batch"] += accum
            loss_mean = _mean_over_ranks(loss_sum, env)
            rows.append(
                {
                    "step": state["step"],
                    "epoch": state["epoch"],
                    "loss": f"{loss_mean:.6f}",
                    "samples": samples * env.world_size,
                    "seconds": f"{time.perf_counter() - t0:.3f}",
                }
            )
            bar.update(1)
            bar.set_postfix(loss=f"{loss_mean:.4f}")
            if state["step"] % settings["checkpoint_every"] == 0 or state["step"] == total:
                _checkpoint(out_dir, model, optimizer, settings, state, rows, phase, env)
        if state["batch"] >= steps_per_epoch * accum:
            state["epoch"] += 1
            state["batch"] = 0
    bar.close()
    if env.main:
        ckpt.save_model(out_dir / "final", model, settings)
        write_losses(out_dir, rows, phase)
    if env.world_size > 1:
        dist.barrier()
    return {
        "phase": phase,
        "steps": state["step"],
        "losses": [float(r["loss"]) for r in rows],
        "rank": env.rank,
        "world_size": env.world_size,
        "model": model,
    }


def _mean_over_ranks(value: float, env: Dist) -> float:
    if env.world_size == 1:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=env.device)
    dist.all_reduce(t)
    return float(t.item()) / env.world_size


def _checkpoint(out_dir, model, optimizer, settings, state, rows, phase, env: Dist) -> None:
    if env.main:
        ckpt.save_checkpoint(out_dir, model, optimizer, settings, state, settings["keep_checkpoints"])
        write_losses(out_dir, rows, phase)
    if env.world_size > 1:
        dist.barrier()
