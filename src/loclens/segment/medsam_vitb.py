"""MedSAM ViT-B (Ma et al., Nature Communications 2024) as a box-prompted medical segmenter.

The network is ``segment_anything``'s ``vit_b`` architecture with MedSAM's weights: the
original ``medsam_vit_b.pth``, or the transformers copy on the Hugging Face Hub (the default
download, see ``checkpoints.KNOWN_SOURCES``), converted to ``segment_anything``'s layout by
``sam_hf_format``. Pre- and post-processing are those of MedSAM's inference script
(``MedSAM_Inference.py``, bowang-lab/MedSAM, main branch), with the same library calls, and
not ``SamPredictor``'s (MedSAM was trained without SAM's ImageNet normalisation and padding):

- the whole image, as HxWx3 (a grayscale image is the script's channel repeated three times,
  which is what ``imageio.load_rgb`` makes of it), is resized to 1024 x 1024 with
  ``skimage.transform.resize(order=3, preserve_range=True, anti_aliasing=True)`` (aspect
  ratio not kept) and cast to uint8 (truncation, as the script does);
- min-max normalised to [0, 1] over the whole array, dividing by ``max(max - min, 1e-8)``;
- boxes are scaled from original pixels to that 1024 frame (x by 1024/W, y by 1024/H, in
  float64, then float32); the script parses integer boxes, loclens passes its boxes as given;
- the low-resolution logits go through a sigmoid, are resized bilinearly
  (``align_corners=False``) to the original size, and thresholded at ``mask_threshold`` (0.5).

tests/test_medsam_vitb.py compares this with the script itself on real VQA-RAD images. All
boxes of an image are decoded in one ``decode`` call. ``arch`` overrides (tests only) shrink
the network; the input size then follows the overridden ``image_size``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from skimage import transform

from ..provenance import cached_checkpoint_sha256
from .checkpoints import CheckpointError, weights_file
from .inference import autocast, decode_boxes, timed
from .litemedsam import Encoded
from .sam_models import load_sam_network

MODEL_NAME = "MedSAM ViT-B"


def preprocess(image: np.ndarray, size: int) -> np.ndarray:
    """HxWx3 uint8 -> 3 x size x size float32 in [0, 1], as MedSAM's inference script makes it.

    The three channels are resized together even when they are equal (radiographs): resizing
    one channel is an order of magnitude faster, but its values differ in the last bits, and the
    uint8 truncation turns some of those into a whole level (thousands of pixels on a 256x256
    VQA-RAD image), so the result would no longer be the script's."""
    resized = transform.resize(image, (size, size), order=3, preserve_range=True, anti_aliasing=True).astype(np.uint8)
    # uint8 - uint8 minimum stays uint8 (no negatives); the division promotes to float64.
    normalised = (resized - resized.min()) / np.clip(resized.max() - resized.min(), a_min=1e-8, a_max=None)
    return normalised.transpose(2, 0, 1).astype(np.float32)


def scale_boxes(boxes: np.ndarray, height: int, width: int, size: int) -> np.ndarray:
    """Boxes (N x 4, x0 y0 x1 y1 in original pixels) in the size x size input frame."""
    return np.asarray(boxes, dtype=np.float64) / np.array([width, height, width, height]) * size


class MedSAMViTB:
    name = "medsam"
    backend = "medsam_vitb"
    model_name = MODEL_NAME

    def __init__(
        self,
        checkpoint: str | None,
        device: str = "cpu",
        threshold: float = 0.5,
        arch: dict | None = None,
        precision: str = "bf16",
    ):
        if not checkpoint:
            raise CheckpointError(
                "segment.medsam.backend=medsam_vitb needs the MedSAM ViT-B weights: set segment.medsam.checkpoint "
                "(medsam_vit_b.pth, or a transformers SamModel file or folder), or fetch the default download "
                "with `loclens fetch-checkpoint --segmenter medsam`"
            )
        # A transformers model folder is read (and its sha256 recorded) through its weights file.
        self.checkpoint = str(weights_file(checkpoint))
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
        box_t = torch.as_tensor(scale_boxes(boxes, h, w, self.input_size), dtype=torch.float32, device=self.device)
        with timed(self.timings, "decoder", self.device):
            logits, iou = decode_boxes(self.net, enc.embedding, box_t, self.device, self.precision)
            probs = F.interpolate(torch.sigmoid(logits), size=(h, w), mode="bilinear", align_corners=False)
            masks = probs[:, 0] > self.threshold
            scores = iou
        return masks, scores
