"""The contrastive lens model: vision tower -> pixel-shuffle connector -> lens fusion, vs a text tower.

- Pixel-shuffle connector (paper Eq. 5): space-to-depth with factor ``r`` turns an ``h x w``
  grid of ``C``-channel features into an ``h/r x w/r`` grid of ``C r^2`` channels (r = 4 keeps
  1/16 of the tokens and loses nothing), then an MLP projects each token to the model width.
  Switched off, every token of the tower is projected as it is (the ablation).
- Lens fusion (paper Eq. 4): the original image's mean token is the query of one attention
  over the tokens of every view present (original and lens views, each tagged with a learned
  embedding of its view type); the result, added to the query, is the image representation.
  With the original alone (inference) it attends over the original's own tokens.
- Image and text are projected to a shared, L2-normalised embedding; similarity / temperature
  gives the logits of the phase's contrastive loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..schema import IMAGE_COLUMNS
from .data import default_collate_images
from .losses import contrastive_loss, same_pairs
from .towers import TextTower, VisionTower, build_vision


class PixelShuffleConnector(nn.Module):
    def __init__(self, channels: int, dim: int, factor: int = 4, enabled: bool = True):
        super().__init__()
        self.factor, self.enabled = factor, enabled
        in_dim = channels * factor * factor if enabled else channels
        self.proj = nn.Sequential(nn.Linear(in_dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def shuffle(self, grid: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> (B, C r^2, ceil(h/r), ceil(w/r)); odd grids are zero-padded."""
        r = self.factor
        pad_h, pad_w = -grid.shape[2] % r, -grid.shape[3] % r
        if pad_h or pad_w:
            grid = F.pad(grid, (0, pad_w, 0, pad_h))
        return F.pixel_unshuffle(grid, r)

    def forward(self, grid: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) -> tokens (B, N, dim)."""
        if self.enabled:
            grid = self.shuffle(grid)
        return self.proj(grid.flatten(2).transpose(1, 2))


class LensFusion(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.view_type = nn.Embedding(len(IMAGE_COLUMNS), dim)
        self.norm_q, self.norm_kv, self.norm_out = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, tokens: torch.Tensor, view_ids: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """tokens (B, V, N, dim) with the original in slot 0; present (B, V) -> (B, dim)."""
        b, v, n, d = tokens.shape
        tokens = tokens + self.view_type(view_ids)[:, :, None, :]
        query = self.norm_q(tokens[:, 0].mean(dim=1, keepdim=True))
        keys = self.norm_kv(tokens.reshape(b, v * n, d))
        ignore = ~present.repeat_interleave(n, dim=1)
        fused, _ = self.attn(query, keys, keys, key_padding_mask=ignore, need_weights=False)
        return self.norm_out(query + fused)[:, 0]


class LensAligner(nn.Module):
    """The phase-1/phase-2 model. ``settings`` is the ``train:`` config section."""

    kind = "contrastive"

    def __init__(self, settings: dict, vision: VisionTower | None = None, text: TextTower | None = None):
        super().__init__()
        self.settings = settings
        dim, embed = settings["embed_dim"], settings["embed_dim"]
        self.vision = vision if vision is not None else build_vision(settings["vision"])
        self.text = text if text is not None else TextTower(settings["text"]["path"], settings["text"]["max_length"])
        conn = settings["connector"]
        self.connector = PixelShuffleConnector(self.vision.channels, dim, conn["factor"], conn["pixel_shuffle"])
        self.fusion = LensFusion(dim, settings["fusion_heads"])
        self.image_head = nn.Linear(dim, embed)
        self.text_head = nn.Linear(self.text.dim, embed)
        self.frozen = {"vision": settings["vision"]["freeze"], "text": settings["text"]["freeze"]}
        for name, frozen in self.frozen.items():
            getattr(self, name).requires_grad_(not frozen)

    def train(self, mode: bool = True):
        super().train(mode)
        for name, frozen in self.frozen.items():
            if frozen:
                getattr(self, name).eval()  # frozen towers: no dropout, fixed norm statistics
        return self

    # -- data side (runs in DataLoader workers) --------------------------------------------
    def prepare(self, sample: dict) -> dict:
        sample = dict(sample)
        sample["pixels"] = torch.stack([self.vision.prepare(img) for img in sample.pop("images")])
        return sample

    def collate(self, samples: list[dict]) -> dict:
        return default_collate_images(samples)

    # -- model side ---------------------------------------------------------------------------
    def _tower(self, name: str, inputs):
        tower = getattr(self, name)
        if self.frozen[name]:
            with torch.no_grad():
                return tower(inputs)
        return tower(inputs)

    def encode_image(
        self, pixels: torch.Tensor, view_ids: torch.Tensor | None = None, present: torch.Tensor | None = None
    ) -> torch.Tensor:
        """pixels (B, V, 3, H, W) with the original in slot 0, or (B, 3, H, W) originals only
        (inference) -> L2-normalised (B, embed)."""
        if pixels.ndim == 4:
            pixels = pixels[:, None]
        b, v = pixels.shape[:2]
        if present is None:
            present = torch.ones((b, v), dtype=torch.bool, device=pixels.device)
        if view_ids is None:
            view_ids = torch.zeros((b, v), dtype=torch.long, device=pixels.device)
        tokens = self.connector(self._tower("vision", pixels[present]).float())
        grid = tokens.new_zeros((b, v, *tokens.shape[1:]))
        grid[present] = tokens.to(grid.dtype)
        fused = self.fusion(grid, view_ids, present)
        return F.normalize(self.image_head(fused).float(), dim=-1)

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        return F.normalize(self.text_head(self._tower("text", texts).float()).float(), dim=-1)

    @torch.no_grad()
    def embed_images(self, images: list, batch_size: int = 16) -> torch.Tensor:
        """Original HxWx3 uint8 images -> embeddings, as at inference (no lens views)."""
        device = next(self.image_head.parameters()).device
        out = []
        for i in range(0, len(images), batch_size):
            pixels = torch.stack([self.vision.prepare(im) for im in images[i : i + batch_size]]).to(device)
            out.append(self.encode_image(pixels))
        return torch.cat(out)

    def forward(self, batch: dict, loss: str, temperature: float) -> torch.Tensor:
        """The phase's contrastive loss of one batch (DDP wraps this call)."""
        device = self.image_head.weight.device
        image = self.encode_image(batch["pixels"].to(device), batch["view_ids"].to(device), batch["present"].to(device))
        text = self.encode_text(batch["texts"])
        logits = image @ text.T / temperature
        return contrastive_loss(loss, logits, same_pairs(batch["texts"], batch["image_ids"]).to(device))

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Everything a checkpoint must hold: all but frozen towers (rebuilt from their source)."""
        skip = tuple(f"{name}." for name, frozen in self.frozen.items() if frozen)
        return {k: v for k, v in self.state_dict().items() if not k.startswith(skip)}

    def spec(self) -> dict:
        return {"kind": self.kind, "vision": self.vision.spec(), "text": self.text.spec()}
