"""Per-family adapters: how the lens reaches into one kind of Hugging Face image-text-to-text model.

The lens model (``vlm.VLMLens``) needs five things from a model family, and nothing else:

- ``pixels(image)``: one HxWx3 uint8 image -> the vision encoder's inputs for it (a dict of
  tensors without a batch axis), made by the model's own image processor;
- ``patch_embeddings(inputs)``: a batch of those -> the vision encoder's patch tokens (M, N, C),
  N = side x side in row-major order (what the fusion attends over);
- ``connect(tokens)``: (M, N, C) -> the language model's image tokens (M, n, D): the family's
  connector, with pixel shuffle of factor ``r`` (``train.connector``);
- ``image_prompt()``: the text that stands for one image in a prompt, with exactly ``n`` image
  tokens (``image_token_id``), replacing the chat template's image placeholder;
- component prefixes (vision / connector / lm) for freezing, learning rates and checkpoints.

Adding a family is one subclass registered in ``FAMILIES`` under its ``config.model_type``.

Pixel shuffle with a factor other than the model's own (Idefics3 / SmolVLM ship one, e.g. 4 for
SmolVLM-256M/500M; LLaVA has none, i.e. 1) changes the projection's input width from C s^2 to
C r^2. The new projection is *adapted*, not trained from scratch: the model's weights are summed
over its s^2 sub-positions (a per-channel weight) and spread evenly over the new r^2
sub-positions. On locally uniform features the adapted connector therefore gives exactly the
model's own output, so training starts from the pretrained mapping rather than from noise.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def pad_grid(tokens: torch.Tensor, r: int) -> tuple[torch.Tensor, int]:
    """(M, side^2, C) row-major tokens -> zero-padded (M, side'^2, C) with side' a multiple of r."""
    m, n, c = tokens.shape
    side = math.isqrt(n)
    if side * side != n:
        raise ValueError(f"pixel shuffle needs a square grid of patch tokens, got {n} tokens")
    pad = -side % r
    if pad:
        grid = F.pad(tokens.reshape(m, side, side, c), (0, 0, 0, pad, 0, pad))
        side += pad
        tokens = grid.reshape(m, side * side, c)
    return tokens, side


def space_to_depth(tokens: torch.Tensor, r: int) -> torch.Tensor:
    """Pixel shuffle (paper Eq. 5): (M, side^2, C) -> (M, (side/r)^2, C r^2); each output
    token holds its r x r neighbourhood as r^2 consecutive blocks of C channels (row-major), the
    layout of Idefics3's own pixel shuffle."""
    tokens, side = pad_grid(tokens, r)
    m, _, c = tokens.shape
    grid = tokens.reshape(m, side // r, r, side // r, r, c).permute(0, 1, 3, 2, 4, 5)
    return grid.reshape(m, (side // r) ** 2, r * r * c)


def adapted_projection(native: nn.Linear, channels: int, r: int) -> nn.Linear:
    """A Linear taking C r^2 inputs, adapted from ``native`` (C s^2 inputs in blocks of C)."""
    s2 = native.in_features // channels
    if s2 * channels != native.in_features:
        raise ValueError(f"projection input width {native.in_features} is not a multiple of {channels} channels")
    per_channel = native.weight.detach().reshape(native.out_features, s2, channels).sum(dim=1)
    new = nn.Linear(
        channels * r * r,
        native.out_features,
        bias=native.bias is not None,
        device=native.weight.device,
        dtype=native.weight.dtype,
    )
    with torch.no_grad():
        new.weight.copy_((per_channel / (r * r)).repeat(1, r * r))
        if native.bias is not None:
            new.bias.copy_(native.bias.detach())
    return new


class Family:
    """Interface of a model family; see the module docstring."""

    model_types: tuple[str, ...] = ()
    vision_prefixes: tuple[str, ...] = ()
    connector_prefixes: tuple[str, ...] = ()
    lm_prefixes: tuple[str, ...] = ()

    def __init__(self, model, processor, factor: int, pixel_shuffle: bool):
        self.model, self.processor = model, processor
        self.r = factor if pixel_shuffle else 1
        self.tokenizer = processor.tokenizer
        self.image_token_id = int(model.config.image_token_id)

    #: Patch tokens per side of the vision encoder's grid, and their width C.
    grid_side: int
    vision_width: int

    def pixels(self, image: np.ndarray) -> dict:
        raise NotImplementedError

    def patch_embeddings(self, inputs: dict) -> torch.Tensor:
        raise NotImplementedError

    def connect(self, tokens: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def image_prompt(self) -> str:
        raise NotImplementedError

    @property
    def n_image_tokens(self) -> int:
        """Image tokens the language model receives per image (training and inference alike)."""
        return math.ceil(self.grid_side / self.r) ** 2

    def language_model(self) -> nn.Module:
        """The decoder without its head (text-only forward for the contrastive text side)."""
        return self.model.model.language_model

    def input_embeddings(self) -> nn.Module:
        return self.model.get_input_embeddings()


class Idefics3Family(Family):
    """Idefics3 and SmolVLM: SigLIP encoder, ``Idefics3Connector`` (pixel shuffle + Linear).

    The model's own connector runs with its scale factor set to ``r`` (1 = shuffle off); its
    projection is adapted when ``r`` differs from the model's own factor. One image per sample
    (no tiling): the processor's global image at ``max_image_size``, so every image is one
    image's worth of tokens.
    """

    model_types = ("idefics3", "smolvlm")
    vision_prefixes = ("model.model.vision_model.",)
    connector_prefixes = ("model.model.connector.",)
    lm_prefixes = ("model.model.text_model.", "model.lm_head.")

    def __init__(self, model, processor, factor: int, pixel_shuffle: bool):
        super().__init__(model, processor, factor, pixel_shuffle)
        vcfg = model.config.vision_config
        self.vision_width = vcfg.hidden_size
        self.grid_side = vcfg.image_size // vcfg.patch_size
        self.patch_size = vcfg.patch_size
        processor.image_processor.do_image_splitting = False
        connector = model.model.connector
        if self.r != connector.scale_factor:
            proj = connector.modality_projection
            proj.proj = adapted_projection(proj.proj, self.vision_width, self.r)
            connector.scale_factor = self.r

    def language_model(self) -> nn.Module:
        return self.model.model.text_model

    def pixels(self, image: np.ndarray) -> dict:
        out = self.processor.image_processor(images=[[image]], return_tensors="pt", do_image_splitting=False)
        return {"pixel_values": out["pixel_values"][0, 0], "pixel_attention_mask": out["pixel_attention_mask"][0, 0]}

    def patch_embeddings(self, inputs: dict) -> torch.Tensor:
        vision = self.model.model.vision_model
        pixels = inputs["pixel_values"].to(vision.dtype)
        mask = inputs["pixel_attention_mask"].bool()
        p = self.patch_size
        patch_mask = mask.unfold(1, p, p).unfold(2, p, p).sum(dim=(-1, -2)) > 0  # as Idefics3 does
        return vision(pixel_values=pixels, patch_attention_mask=patch_mask).last_hidden_state

    def connect(self, tokens: torch.Tensor) -> torch.Tensor:
        tokens, _ = pad_grid(tokens, self.r)
        return self.model.model.connector(tokens)

    def image_prompt(self) -> str:
        p = self.processor
        # Idefics3Processor calls the global-image marker global_image_tag, SmolVLMProcessor global_image_token.
        marker = getattr(p, "global_image_tag", None) or p.global_image_token
        return f"{p.fake_image_token}{marker}{p.image_token * self.n_image_tokens}{p.fake_image_token}"


class LlavaFamily(Family):
    """LLaVA architecture (``LlavaForConditionalGeneration``, LLaVA-Med's): CLIP / SigLIP tower,
    features from ``vision_feature_layer`` (CLS dropped under the ``default`` strategy), then
    pixel shuffle (``r`` > 1) before the multi-modal projector, whose first Linear is adapted."""

    model_types = ("llava",)
    vision_prefixes = ("model.model.vision_tower.",)
    connector_prefixes = ("model.model.multi_modal_projector.",)
    lm_prefixes = ("model.model.language_model.", "model.lm_head.")

    def __init__(self, model, processor, factor: int, pixel_shuffle: bool):
        super().__init__(model, processor, factor, pixel_shuffle)
        cfg = model.config
        self.layers = cfg.vision_feature_layer
        self.strategy = cfg.vision_feature_select_strategy
        n_layers = 1 if isinstance(self.layers, int) else len(self.layers)
        self.vision_width = cfg.vision_config.hidden_size * n_layers
        self.grid_side = cfg.vision_config.image_size // cfg.vision_config.patch_size
        if self.r > 1:
            projector = model.model.multi_modal_projector
            projector.linear_1 = adapted_projection(projector.linear_1, self.vision_width, self.r)

    def pixels(self, image: np.ndarray) -> dict:
        return {"pixel_values": self.processor.image_processor(images=[image], return_tensors="pt")["pixel_values"][0]}

    def patch_embeddings(self, inputs: dict) -> torch.Tensor:
        tower = self.model.model.vision_tower
        out = tower(inputs["pixel_values"].to(tower.dtype), output_hidden_states=True)
        layers = [self.layers] if isinstance(self.layers, int) else self.layers
        hidden = [out.hidden_states[k] for k in layers]
        if self.strategy == "default":
            hidden = [h[:, 1:] for h in hidden]
        return torch.cat(hidden, dim=-1)

    def connect(self, tokens: torch.Tensor) -> torch.Tensor:
        if self.r > 1:
            tokens = space_to_depth(tokens, self.r)
        return self.model.model.multi_modal_projector(tokens)

    def image_prompt(self) -> str:
        return self.processor.image_token * self.n_image_tokens


FAMILIES: dict[str, type[Family]] = {t: cls for cls in (Idefics3Family, LlavaFamily) for t in cls.model_types}


def family_for(model, processor, factor: int, pixel_shuffle: bool) -> Family:
    model_type = model.config.model_type
    if model_type not in FAMILIES:
        raise ValueError(
            f"model type {model_type!r} has no lens adapter; supported: {sorted(FAMILIES)} "
            "(a new family is one Family subclass in loclens.train.families)"
        )
    return FAMILIES[model_type](model, processor, factor, pixel_shuffle)
