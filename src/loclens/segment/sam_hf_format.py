"""transformers ``SamModel`` checkpoints -> ``segment_anything`` state dicts.

SAM and MedSAM weights are published in two layouts: the original ``segment_anything`` one
(``sam_vit_b_01ec64.pth``, ``medsam_vit_b.pth``) and the transformers one (``SamModel``:
``model.safetensors`` or ``pytorch_model.bin``, e.g. ``facebook/sam-vit-base`` or
``flaviagiammarino/medsam-vit-base`` on the Hugging Face Hub), which transformers' script
``convert_sam_to_hf.py`` makes from the original by renaming keys (tensors are not changed).
``to_segment_anything`` undoes that renaming, so loclens runs every checkpoint through the same
``segment_anything`` network; tests/test_checkpoints.py checks that a converted tiny random
``SamModel`` gives ``SamModel``'s outputs and masks.
"""

from __future__ import annotations

import re

import torch

#: A key prefix found only in the transformers layout.
HF_PREFIX = "vision_encoder."

#: Renamed modules (transformers name -> segment_anything name), applied in this order as
#: whole dotted-path pieces. Specific layer norms come before the generic ``layer_norm``.
_RENAMES = [
    ("vision_encoder.", "image_encoder."),
    ("image_encoder.layers.", "image_encoder.blocks."),
    ("image_encoder.patch_embed.projection.", "image_encoder.patch_embed.proj."),
    ("image_encoder.neck.conv1.", "image_encoder.neck.0."),
    ("image_encoder.neck.layer_norm1.", "image_encoder.neck.1."),
    ("image_encoder.neck.conv2.", "image_encoder.neck.2."),
    ("image_encoder.neck.layer_norm2.", "image_encoder.neck.3."),
    ("mask_decoder.upscale_conv1.", "mask_decoder.output_upscaling.0."),
    ("mask_decoder.upscale_layer_norm.", "mask_decoder.output_upscaling.1."),
    ("mask_decoder.upscale_conv2.", "mask_decoder.output_upscaling.3."),
    ("prompt_encoder.mask_embed.conv1.", "prompt_encoder.mask_downscaling.0."),
    ("prompt_encoder.mask_embed.layer_norm1.", "prompt_encoder.mask_downscaling.1."),
    ("prompt_encoder.mask_embed.conv2.", "prompt_encoder.mask_downscaling.3."),
    ("prompt_encoder.mask_embed.layer_norm2.", "prompt_encoder.mask_downscaling.4."),
    ("prompt_encoder.mask_embed.conv3.", "prompt_encoder.mask_downscaling.6."),
    ("prompt_encoder.point_embed.", "prompt_encoder.point_embeddings."),
    (
        "prompt_encoder.shared_embedding.positional_embedding",
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
    ),
]
#: The image-side copy of the prompt encoder's positional matrix (one tensor, stored twice
#: or, when a saver drops tied weights, only here).
SHARED_PE = "shared_image_embedding.positional_embedding"
SAM_PE = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
#: segment_anything's MLP heads (``layers.0..n-1``) are ``proj_in``, ``layers.0..n-3`` and
#: ``proj_out`` in transformers.
_MLP_HEAD = re.compile(
    r"^(mask_decoder\.(?:iou_prediction_head|output_hypernetworks_mlps\.\d+))\.(proj_in|proj_out|layers\.(\d+))\.(.+)$"
)


def is_transformers_sam(state: dict) -> bool:
    return any(k.startswith(HF_PREFIX) for k in state)


def _rename(key: str) -> str:
    for old, new in _RENAMES:
        if old in key:
            key = key.replace(old, new, 1)
    # Every other layer norm (encoder blocks, decoder transformer) drops the "layer_" prefix.
    return re.sub(r"(^|\.)layer_norm", r"\1norm", key)


def _mlp_depths(state: dict) -> dict[str, int]:
    """Number of linear layers of each MLP head: its hidden ``layers.k`` plus proj_in/out."""
    hidden: dict[str, set] = {}
    for key in state:
        m = _MLP_HEAD.match(key)
        if m:
            hidden.setdefault(m.group(1), set())
            if m.group(3) is not None:
                hidden[m.group(1)].add(int(m.group(3)))
    return {head: len(layers) + 2 for head, layers in hidden.items()}


def to_segment_anything(state: dict) -> dict[str, torch.Tensor]:
    """The state dict of a transformers ``SamModel`` in ``segment_anything``'s ``Sam`` layout."""
    depths = _mlp_depths(state)
    out: dict[str, torch.Tensor] = {}
    shared = state.get(SHARED_PE)
    for key, value in state.items():
        if key == SHARED_PE:
            continue
        m = _MLP_HEAD.match(key)
        if m:
            head, part, hidden, rest = m.groups()
            index = 0 if part == "proj_in" else depths[head] - 1 if part == "proj_out" else int(hidden) + 1
            key = f"{head}.layers.{index}.{rest}"
        out[_rename(key)] = value
    if SAM_PE not in out and shared is not None:
        out[SAM_PE] = shared
    elif shared is not None and not torch.equal(shared, out[SAM_PE]):
        raise ValueError(f"{SHARED_PE} differs from the prompt encoder's positional matrix: not a SamModel checkpoint")
    return out
