"""Segmentation stage: run segmenters over a work shard of images and cache their masks.

Expensive and GPU-bound, so it is cached separately from rendering: changing blend settings
never re-runs a model. Segmenter families:

- ``sam``: SAM in automatic ("everything") mode, filtered for radiology (``sam.py``);
- ``medsam``: a box-prompted medical model, LiteMedSAM (``litemedsam.py``) or MedSAM ViT-B
  (``medsam_vitb.py``), with boxes from named prompt sources (``prompts.py``).

torch is imported lazily: the workflow imports this package's light modules when it loads.
"""

from __future__ import annotations

#: Box-prompted backends for the ``medsam`` segmenter family.
MEDSAM_BACKENDS = ("litemedsam", "medsam_vitb")


def resolve_device(device: str) -> str:
    """``auto``: the GPU the scheduler made visible, or with several visible GPUs the first one
    no other loclens job holds (see ``gpu_slots``); the CPU when there is no GPU."""
    import torch  # here, so that readers using segment.rle do not pay for importing torch

    if device == "auto":
        if not torch.cuda.is_available():
            return "cpu"
        n = torch.cuda.device_count()
        if n == 1:
            return "cuda:0"
        from . import gpu_slots

        return f"cuda:{gpu_slots.acquire(n)}"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"segment.device={device!r} but CUDA is not available on this machine")
    return device


#: Precision of each backend when the caller does not choose: bf16 autocast (on CUDA; the CPU
#: always runs fp32) for the ViT-B models, fp32 for LiteMedSAM, whose small TinyViT encoder
#: runs slower under autocast than in fp32 on a GPU (``benchmarks/gpu_check.py``; BENCHMARKS.md).
DEFAULT_PRECISION = {"sam": "bf16", "medsam_vitb": "bf16", "litemedsam": "fp32"}


def build_segmenter(name: str, cfg: dict, device: str, precision: str | None = None, stand_in: str | None = None):
    """The model for segmenter family ``name`` from its config section (``cfg["checkpoint"]``
    is the resolved checkpoint path, or null for weights shipped with a package).
    ``precision``: ``bf16`` (autocast on CUDA) or ``fp32`` (see ``inference.PRECISIONS``);
    None: the backend's default (``DEFAULT_PRECISION``). ``stand_in``: ``null:ENC[+DEC]``
    replaces the backend's network by fixed latencies (``standin``; benchmarks only)."""
    backend: str = "sam" if name == "sam" else cfg.get("backend", "")
    if stand_in:
        from .standin import StandIn

        if name != "medsam":
            raise ValueError(
                f"a stand-in model ({stand_in}) replaces a box-prompted medsam backend, not segmenter {name!r}"
            )
        return StandIn(stand_in, backend, device)
    precision = precision or DEFAULT_PRECISION.get(backend, "bf16")
    if name == "sam":
        from .sam import SamAutomatic

        return SamAutomatic(cfg, device=device, precision=precision)
    if name == "medsam":
        if cfg["backend"] == "litemedsam":
            from .litemedsam import LiteMedSAM

            return LiteMedSAM(
                checkpoint=cfg.get("checkpoint"), device=device, threshold=cfg["mask_threshold"], precision=precision
            )
        if cfg["backend"] == "medsam_vitb":
            from .medsam_vitb import MedSAMViTB

            return MedSAMViTB(
                checkpoint=cfg.get("checkpoint"),
                device=device,
                threshold=cfg["mask_threshold"],
                arch=cfg.get("arch"),
                precision=precision,
            )
        raise ValueError(f"segment.medsam.backend: unknown backend {cfg['backend']!r}; known: {MEDSAM_BACKENDS}")
    raise ValueError(f"unknown segmenter {name!r}")
