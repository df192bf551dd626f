"""Segmentation stage: run segmenters over a work shard of images and cache their masks.

Expensive and GPU-bound, so it is cached separately from rendering: changing blend settings
never re-runs a model.
"""

from __future__ import annotations

#: Box-prompted backends for the ``medsam`` segmenter family.
MEDSAM_BACKENDS = ("litemedsam",)


def resolve_device(device: str) -> str:
    """``auto`` means the GPU Snakemake (or the user) made visible, else the CPU."""
    import torch  # here, so that readers using segment.rle do not pay for importing torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"segment.device={device!r} but CUDA is not available on this machine")
    return device


def build_segmenter(name: str, cfg: dict, device: str):
    """The model for segmenter family ``name`` from its config section."""
    if name == "medsam":
        if cfg["backend"] == "litemedsam":
            from .litemedsam import LiteMedSAM

            return LiteMedSAM(checkpoint=cfg.get("checkpoint"), device=device, threshold=cfg["mask_threshold"])
        raise ValueError(f"segment.medsam.backend: unknown backend {cfg['backend']!r}; known: {MEDSAM_BACKENDS}")
    raise ValueError(f"unknown or unavailable segmenter {name!r}")
