"""Checkpoints in safetensors, written as whole folders (atomically), and resumed exactly.

A checkpoint folder holds:
- ``model.safetensors``: the trainable weights (frozen towers are rebuilt from the source named
  in ``config.json``, with its sha256, so checkpoints stay small; a lens VLM stores the components
  that differ from its source model, LoRA'd ones as their adapters);
- ``config.json``: the training settings and the towers' specs (what rebuilds the model);
- ``optimizer.safetensors``: AdamW's state tensors, its param groups in the metadata;
- ``rng.safetensors`` and ``trainer_state.json``: RNG states, step, epoch and position in the
  epoch, so a resumed run continues exactly as an uninterrupted one.
The final model of a phase is a folder with the first two files only.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..atomic import atomic_dir

MODEL_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"
STATE_FILE = "trainer_state.json"
CHECKPOINTS = "checkpoints"
_STEP_DIR = re.compile(r"^step-(\d{8})$")


def _contiguous(tensors: dict) -> dict:
    return {k: v.detach().cpu().contiguous() for k, v in tensors.items()}


def write_model(folder: Path, model, settings: dict) -> None:
    save_file(_contiguous(model.trainable_state()), str(folder / MODEL_FILE))
    config = {"settings": settings, "model": model.spec()}
    (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def save_model(folder: str | Path, model, settings: dict) -> Path:
    """A phase's final model (weights + config), replacing ``folder`` atomically."""
    with atomic_dir(folder) as tmp:
        write_model(tmp, model, settings)
    return Path(folder)


def load_weights(folder: str | Path, model) -> None:
    """Load a checkpoint's trainable weights into ``model``; a mismatch names the keys."""
    path = Path(folder) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no model weights (not a loclens checkpoint folder)")
    state = load_file(str(path))
    if hasattr(model, "load_trained"):  # lens VLMs store the components that differ from the source model
        model.load_trained(state, str(path))
        return
    expected = set(model.trainable_state())
    missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or unexpected:
        raise ValueError(f"{path}: does not fit this model (missing {missing[:5]}, unexpected {unexpected[:5]})")
    model.load_state_dict(state, strict=False)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    sd = optimizer.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            tensors[f"{idx}.{name}"] = value if torch.is_tensor(value) else torch.tensor(value)
    return tensors, {"param_groups": json.dumps(sd["param_groups"])}


def _load_optimizer(optimizer: torch.optim.Optimizer, path: Path) -> None:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        groups = json.loads(fh.metadata()["param_groups"])
        state: dict = {}
        for key in fh.keys():
            idx, name = key.split(".", 1)
            state.setdefault(int(idx), {})[name] = fh.get_tensor(key)
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _rng_state() -> tuple[dict, dict]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    np_state = np.random.get_state()
    assert isinstance(np_state, tuple)  # the legacy (MT19937) form, which set_state takes back
    other = {"python": random.getstate(), "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]]}
    return tensors, other


def _set_rng_state(tensors: dict, other: dict) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = other["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = other["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_checkpoint(out_dir: str | Path, model, optimizer, settings: dict, state: dict, keep: int) -> Path:
    """``<out_dir>/checkpoints/step-NNNNNNNN/``; keeps the newest ``keep`` checkpoints."""
    root = Path(out_dir) / CHECKPOINTS
    folder = root / f"step-{state['step']:08d}"
    with atomic_dir(folder) as tmp:
        write_model(tmp, model, settings)
        tensors, meta = _optimizer_tensors(optimizer)
        save_file(_contiguous(tensors), str(tmp / OPTIMIZER_FILE), metadata=meta)
        rng_tensors, rng_other = _rng_state()
        save_file(_contiguous(rng_tensors), str(tmp / RNG_FILE))
        (tmp / STATE_FILE).write_text(json.dumps({**state, "rng": rng_other}) + "\n")
    for old in list_checkpoints(out_dir)[:-keep]:
        shutil.rmtree(old)
    return folder


def list_checkpoints(out_dir: str | Path) -> list[Path]:
    root = Path(out_dir) / CHECKPOINTS
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and _STEP_DIR.match(p.name))


def load_checkpoint(folder: str | Path, model, optimizer) -> dict:
    """Restore weights, optimizer and RNG state; returns the trainer state (step, epoch, batch)."""
    folder = Path(folder)
    load_weights(folder, model)
    _load_optimizer(optimizer, folder / OPTIMIZER_FILE)
    state = json.loads((folder / STATE_FILE).read_text())
    _set_rng_state(load_file(str(folder / RNG_FILE)), state.pop("rng"))
    return state


def read_config(folder: str | Path) -> dict:
    path = Path(folder) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no config (not a loclens model folder)")
    return json.loads(path.read_text())
