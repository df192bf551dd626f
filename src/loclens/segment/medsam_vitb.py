"""MedSAM ViT-B (Ma et al., Nature Communications 2024) as a box-prompted medical segmenter.

The network is ``segment_anything``'s ``vit_b`` architecture with the MedSAM checkpoint
(``medsam_vit_b.pth``). Preprocessing is MedSAM's own, not ``SamPredictor``'s (MedSAM was
trained without SAM's ImageNet normalisation and padding):

- the whole image is resized to 1024 x 1024 (aspect ratio not kept), bicubic with
  anti-aliasing, as 8-bit RGB;
- min-max normalised to [0, 1];
- boxes are scaled from original pixels to that 1024 frame (x by 1024/W, y by 1024/H);
- the low-resolution logits go through a sigmoid, are resized bilinearly to the original
  size, and thresholded at ``mask_threshold`` (0.5).

All boxes of an image are decoded in one mask-decoder call. ``arch`` overrides (tests only)
shrink the network; the input size then follows the overridden ``image_size``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..provenance import cached_checkpoint_sha256
from .checkpoints import CheckpointError
from .inference import autocast, decode_boxes, timed
from .litemedsam import Encoded
from .sam_models import load_sam_network

MODEL_NAME = "MedSAM ViT-B"


def preprocess(image: np.ndarray, size: int) -> np.ndarray:
    """HxWx3 uint8 -> 3 x size x size float32 in [0, 1]."""
    # PIL's bicubic filter widens its support when shrinking, i.e. it anti-aliases, like
    # skimage's resize(order=3, anti_aliasing=True) in MedSAM's inference script.
    resized = np.asarray(Image.fromarray(image).resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32)
    lo, hi = float(resized.min()), float(resized.max())
    return ((resized - lo) / max(hi - lo, 1e-8)).transpose(2, 0, 1)


class MedSAMViTB:
    name = "medsam"
    backend = "medsam_vitb"
    model_name = MODEL_NAME

    def __init__(
        self, checkpoint: str | None, device: str = "cpu", threshold: float = 0.5, arch: dict | None = None,
        precision: str = "bf16",
    ):
        if not checkpoint:
            raise CheckpointError(
                "segment.medsam.backend=medsam_vitb needs the MedSAM ViT-B checkpoint (medsam_vit_b.pth): "
                "set segment.medsam.checkpoint or segment.medsam.download"
            )
        self.checkpoint = str(checkpoint)
        self.checkpoint_sha256 = cached_checkpoint_sha256(self.checkpoint)
        self.device = torch.device(device)
        self.threshold = threshold
        self.precision = precision
        self.net = load_sam_network("vit_b", self.checkpoint, arch).to(self.device).eval()
        self.input_size = self.net.image_encoder.img_size
        self.timings = {"encoder": 0.0, "decoder": 0.0}

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """CPU preprocessing of one image; the runner calls it in its loader thread."""
        return preprocess(image, self.input_size)

    @torch.inference_mode()
    def encode(self, images: list[np.ndarray], prepared: list | None = None) -> list[Encoded]:
        """One encoder pass for a batch of images."""
        prepped = prepared if prepared is not None else [self.prepare(img) for img in images]
        batch = torch.from_numpy(np.stack(prepped)).to(self.device)
        with timed(self.timings, "encoder", self.device), autocast(self.device, self.precision):
            emb = self.net.image_encoder(batch).float()
        size = (self.input_size, self.input_size)
        return [Encoded(emb[i : i + 1], img.shape[:2], size) for i, img in enumerate(images)]

    def decode(self, enc: Encoded, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``decode_device``'s masks and scores on the host, as numpy arrays."""
        masks, scores = self.decode_device(enc, boxes)
        return masks.cpu().numpy(), scores.cpu().numpy()

    @torch.inference_mode()
    def decode_device(self, enc: Encoded, boxes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """All boxes (N x 4, x0 y0 x1 y1 in original pixels) of one image in one decoder call.

        Returns boolean masks (N x H x W) at the original resolution and predicted IoU (N), on
        the device: the pipeline run-length encodes them there (``run.post_process``)."""
        h, w = enc.original_hw
        if len(boxes) == 0:
            return torch.zeros((0, h, w), dtype=torch.bool, device=self.device), torch.zeros((0,), device=self.device)
        scale = np.array([w, h, w, h], dtype=np.float32)
        box_t = torch.as_tensor(np.asarray(boxes, dtype=np.float32) / scale * self.input_size, device=self.device)
        with timed(self.timings, "decoder", self.device):
            logits, iou = decode_boxes(self.net, enc.embedding, box_t, self.device, self.precision)
            probs = F.interpolate(torch.sigmoid(logits), size=(h, w), mode="bilinear", align_corners=False)
            masks = probs[:, 0] > self.threshold
            scores = iou
        return masks, scores
