"""SAM-family networks (SAM ViT-B/L/H, MedSAM ViT-B) built from ``segment_anything.modeling``.

``segment_anything.build_sam`` hard-codes everything but the encoder width and depth, so the
published architectures are restated here as data (``ARCHS``, checked against the library's
own registry in the tests) and can be overridden key by key through ``arch:`` in the config.
The overrides exist for testing: tiny randomly initialised models exercise the real code
paths on a CPU. Real checkpoints need the unmodified architecture.

Checkpoints in transformers' ``SamModel`` layout are converted to this one on loading
(``sam_hf_format``), so both layouts run through the same network.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import torch
from segment_anything.modeling import (
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)

from .checkpoints import CheckpointError, read_state_dict
from .sam_hf_format import is_transformers_sam, to_segment_anything

#: Architecture constants shared by every published SAM (segment_anything/build_sam.py).
COMMON = {
    "image_size": 1024,
    "patch_size": 16,
    "window_size": 14,
    "prompt_embed_dim": 256,
    "mask_in_chans": 16,
    "decoder_depth": 2,
    "decoder_mlp_dim": 2048,
    "decoder_num_heads": 8,
    "iou_head_depth": 3,
    "iou_head_hidden_dim": 256,
}

#: The published image encoders by model type (MedSAM ViT-B uses ``vit_b``).
ARCHS = {
    "vit_b": {
        **COMMON,
        "encoder_embed_dim": 768,
        "encoder_depth": 12,
        "encoder_num_heads": 12,
        "encoder_global_attn_indexes": [2, 5, 8, 11],
    },
    "vit_l": {
        **COMMON,
        "encoder_embed_dim": 1024,
        "encoder_depth": 24,
        "encoder_num_heads": 16,
        "encoder_global_attn_indexes": [5, 11, 17, 23],
    },
    "vit_h": {
        **COMMON,
        "encoder_embed_dim": 1280,
        "encoder_depth": 32,
        "encoder_num_heads": 16,
        "encoder_global_attn_indexes": [7, 15, 23, 31],
    },
}

#: SAM's pixel normalisation (ImageNet statistics on 0..255), as in build_sam.py.
PIXEL_MEAN = [123.675, 116.28, 103.53]
PIXEL_STD = [58.395, 57.12, 57.375]


def arch_spec(model_type: str, overrides: dict | None = None) -> dict:
    if model_type not in ARCHS:
        raise ValueError(f"unknown SAM model type {model_type!r}; known: {sorted(ARCHS)}")
    unknown = set(overrides or {}) - set(ARCHS[model_type])
    if unknown:
        raise ValueError(f"unknown arch override(s) {sorted(unknown)}; known: {sorted(ARCHS[model_type])}")
    return {**ARCHS[model_type], **(overrides or {})}


def build_sam_network(model_type: str, overrides: dict | None = None) -> Sam:
    """An untrained ``Sam`` of the given architecture (in eval mode)."""
    a = arch_spec(model_type, overrides)
    embedding = a["image_size"] // a["patch_size"]
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=a["encoder_depth"],
            embed_dim=a["encoder_embed_dim"],
            img_size=a["image_size"],
            mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            num_heads=a["encoder_num_heads"],
            patch_size=a["patch_size"],
            qkv_bias=True,
            use_rel_pos=True,
            global_attn_indexes=tuple(a["encoder_global_attn_indexes"]),
            window_size=a["window_size"],
            out_chans=a["prompt_embed_dim"],
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=a["prompt_embed_dim"],
            image_embedding_size=(embedding, embedding),
            input_image_size=(a["image_size"], a["image_size"]),
            mask_in_chans=a["mask_in_chans"],
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=a["decoder_depth"],
                embedding_dim=a["prompt_embed_dim"],
                mlp_dim=a["decoder_mlp_dim"],
                num_heads=a["decoder_num_heads"],
            ),
            transformer_dim=a["prompt_embed_dim"],
            iou_head_depth=a["iou_head_depth"],
            iou_head_hidden_dim=a["iou_head_hidden_dim"],
        ),
        pixel_mean=PIXEL_MEAN,
        pixel_std=PIXEL_STD,
    )
    return sam.eval()


def load_sam_network(model_type: str, checkpoint: str | Path, overrides: dict | None = None) -> Sam:
    """The network with the checkpoint's weights (either layout; a transformers model folder or
    its weights file); a checkpoint of another architecture is an error that names the
    mismatching keys rather than a silently half-initialised model."""
    net = build_sam_network(model_type, overrides)
    state = read_state_dict(checkpoint)
    if is_transformers_sam(state):
        try:
            state = to_segment_anything(state)
        except ValueError as exc:
            raise CheckpointError(f"{checkpoint}: {exc}") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # missing, unexpected or mis-shaped keys
        where = f" with arch overrides {overrides}" if overrides else ""
        raise CheckpointError(
            f"{checkpoint}: does not fit the {model_type} architecture{where}: {str(exc)[:600]}"
        ) from None
    return net
