"""Training on a released dataset: phase 1 ``align`` (DCL) and phase 2 ``vqa`` (InfoNCE).

The public API (stable; evaluation and benchmarks build on it):

- ``default_settings(seed=0, **train_overrides) -> dict``: the validated ``train:`` config
  section with defaults, plus ``seed`` (what ``train`` and ``build_model`` take).
- ``open_release(location, split="train", datasets=None) -> Release``: a local release folder or
  ``hf://datasets/<org>/<name>[@rev]``, as Parquet row-group units.
- ``ReleaseDataset(release, phase, seed, views, views_per_sample, transform)``: map-style samples
  (``images`` = original then lens views, ``text``, ``question``, ``answer``, ``image_id``, ``key``).
- ``ReleaseStream(...)``: the iterable, (rank, worker)-sharded batches training uses.
- ``train(settings, phase, release, out_dir, init=None) -> dict``: one phase; writes
  ``out_dir/final/`` (model), ``checkpoints/``, ``losses.csv``, ``losses.png``.
- ``build_model(settings)``, ``load_model(folder, device="cpu")``: a ``VLMLens`` (``model: vlm``,
  the paper's method in a Hugging Face VLM; ``answer(image, questions)`` generates from the
  original image, ``vlm.generate_answers_for_rows(model, rows)`` over release rows) or a
  ``LensAligner`` (``model: contrastive``, the offline quick model). ``LensAligner.embed_images(list of HxWx3 uint8)`` and
  ``encode_text(list of str)`` give L2-normalised embeddings (original image only, as at inference).
- ``qa_text(qa)`` / ``align_text(row)``: the exact texts phase 2 / phase 1 train on (rank candidate
  answers with ``qa_text({"question": q, "answer": a})``).
- ``dcl_loss``, ``info_nce_loss`` (``losses``); ``reader_throughput``, ``train_step_throughput`` (``bench``).
- Ablation switches are settings: ``align={"loss": "infonce"}``, ``connector={"pixel_shuffle": False}``,
  ``views=[...]`` (lens sources; ``[]`` = the original-only baseline).
"""

from __future__ import annotations

from .checkpoint import load_weights, read_config
from .data import ReleaseDataset, ReleaseStream
from .loop import build_model, train
from .losses import dcl_loss, info_nce_loss
from .reader import Release, ReleaseError, open_release
from .samples import PHASES, align_text, qa_text


def default_settings(seed: int = 0, **overrides) -> dict:
    """The ``train:`` section with ``overrides`` applied and every missing key (at any depth) from the schema."""
    from ..config import validate

    config = validate({"datasets": {"sample": {}}, "seed": seed, "train": overrides})
    return {**config["train"], "seed": seed}


def load_model(folder, device: str = "cpu"):
    """A trained phase's model folder (``final/`` or a checkpoint) -> the model, in eval mode."""
    settings = read_config(folder)["settings"]
    model = build_model(settings)
    load_weights(folder, model)
    return model.to(device).eval()


__all__ = [
    "PHASES",
    "Release",
    "ReleaseDataset",
    "ReleaseError",
    "ReleaseStream",
    "align_text",
    "build_model",
    "dcl_loss",
    "default_settings",
    "info_nce_loss",
    "load_model",
    "open_release",
    "qa_text",
    "train",
]
