"""SAM in automatic ("everything") mode: the coarse, generic lens of the paper.

Masks come from ``segment_anything.SamAutomaticMaskGenerator`` itself. Its settings are
passed through from ``segment.sam.generator``, and only the keys the user sets: the library's
defaults stay the single source of truth. Two things are added around it for speed, without
changing what it computes:

- image embeddings are computed ahead, for a batch of images in one encoder call, and handed
  to the generator's predictor (``_EmbeddingPredictor``) instead of one ``set_image`` per image;
- each batch of point prompts is run-length encoded in one pass on the device
  (``BatchedRleGenerator``) instead of one mask at a time;
- on CUDA, the image encoder and the mask decoder run under bf16 autocast; the prompt
  encoder's positional encodings stay in float32, and the decoder's outputs are cast back to
  float32 before SAM's upsampling, thresholds, stability scores and NMS.

The generator's masks then go through the radiology filters of ``sam_filter``.
"""

from __future__ import annotations

import inspect
from collections import Counter

import numpy as np
import torch
from pycocotools import mask as mask_utils
from segment_anything import SamAutomaticMaskGenerator
from segment_anything.predictor import SamPredictor
from segment_anything.utils.amg import (
    MaskData,
    batched_mask_to_box,
    calculate_stability_score,
    is_box_near_crop_edge,
    uncrop_masks,
)

from ..provenance import cached_checkpoint_sha256
from .checkpoints import CheckpointError, weights_file
from .inference import Autocast, autocast, timed
from .sam_filter import Candidate, filter_masks
from .sam_models import load_sam_network
from .workers import device_rle_counts

#: Generator arguments loclens sets itself (the model, and RLE output for compact masks).
RESERVED_GENERATOR_ARGS = ("self", "model", "output_mode", "point_grids")


def generator_args() -> list[str]:
    """The settings ``SamAutomaticMaskGenerator`` accepts from the config."""
    params = inspect.signature(SamAutomaticMaskGenerator.__init__).parameters
    return [p for p in params if p not in RESERVED_GENERATOR_ARGS]


def generator_kwargs(settings: dict) -> dict:
    unknown = sorted(set(settings) - set(generator_args()))
    if unknown:
        raise ValueError(f"segment.sam.generator: unknown setting(s) {unknown}; known: {generator_args()}")
    if settings.get("min_mask_region_area", 0) > 0:
        try:
            import cv2  # noqa: F401  (SAM's small-region post-processing needs OpenCV)
        except ImportError:
            raise ValueError(
                "segment.sam.generator.min_mask_region_area > 0 needs OpenCV: pip install opencv-python-headless"
            ) from None
    return dict(settings)


class _EmbeddingPredictor(SamPredictor):
    """A ``SamPredictor`` that takes the full image's embedding computed ahead of time.

    The generator calls ``set_image`` once per crop; the first crop is the whole image, whose
    embedding was computed in a batch. Other crops (``crop_n_layers > 0``) are encoded here."""

    def __init__(self, model, device: torch.device, precision: str):
        super().__init__(model)
        self._device = device
        self._precision = precision
        self._ahead: tuple[torch.Tensor, tuple, tuple] | None = None

    def use_embedding(self, features: torch.Tensor, input_size: tuple, original_size: tuple) -> None:
        self._ahead = (features, tuple(input_size), tuple(original_size))

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        ahead, self._ahead = self._ahead, None
        if ahead is not None and tuple(image.shape[:2]) == ahead[2]:
            self.reset_image()
            self.features, self.input_size, self.original_size = ahead
            self.is_image_set = True
            return
        with autocast(self._device, self._precision):
            super().set_image(image, image_format)
        self.features = self.features.float()


class BatchedRleGenerator(SamAutomaticMaskGenerator):
    """``SamAutomaticMaskGenerator`` whose point batches are run-length encoded in one pass on
    the device. The library's ``mask_to_rle_pytorch`` selects each mask's run boundaries with a
    device-wide comparison and copies them to the host one mask at a time (192 small copies,
    each a GPU sync, per batch of the default 64 points); here the boundaries of the whole batch
    come back in one copy (``workers.device_rle_counts``). The steps of the library's
    ``_process_batch`` are otherwise the same calls of its own helpers, in its order, so the
    masks are identical (tested against the library's generator)."""

    def _process_batch(self, points, im_size, crop_box, orig_size) -> MaskData:
        orig_h, orig_w = orig_size
        transformed = self.predictor.transform.apply_coords(points, im_size)
        in_points = torch.as_tensor(transformed, device=self.predictor.device)
        in_labels = torch.ones(in_points.shape[0], dtype=torch.int, device=in_points.device)
        masks, iou_preds, _ = self.predictor.predict_torch(
            in_points[:, None, :], in_labels[:, None], multimask_output=True, return_logits=True
        )
        data = MaskData(
            masks=masks.flatten(0, 1),
            iou_preds=iou_preds.flatten(0, 1),
            points=torch.as_tensor(points.repeat(masks.shape[1], axis=0)),
        )
        del masks
        if self.pred_iou_thresh > 0.0:
            data.filter(data["iou_preds"] > self.pred_iou_thresh)
        threshold = self.predictor.model.mask_threshold
        data["stability_score"] = calculate_stability_score(data["masks"], threshold, self.stability_score_offset)
        if self.stability_score_thresh > 0.0:
            data.filter(data["stability_score"] >= self.stability_score_thresh)
        data["masks"] = data["masks"] > threshold
        data["boxes"] = batched_mask_to_box(data["masks"])
        keep = ~is_box_near_crop_edge(data["boxes"], crop_box, [0, 0, orig_w, orig_h])
        if not torch.all(keep):
            data.filter(keep)
        full = uncrop_masks(data["masks"], crop_box, orig_h, orig_w)
        data["rles"] = [{"size": [orig_h, orig_w], "counts": c} for c in device_rle_counts(full)]
        del data["masks"]
        return data


class _Timed(torch.nn.Module):
    """A block whose calls add their wall time (after a device sync) to the owner's
    ``timings["mask_decoder"]``: the model's share of the generator's time, for the benchmark's
    model-bound rate."""

    def __init__(self, module: torch.nn.Module, owner):
        super().__init__()
        self.module = module
        self.owner = owner

    def forward(self, *args, **kwargs):
        with timed(self.owner.timings, "mask_decoder", self.owner.device):
            return self.module(*args, **kwargs)


class SamAutomatic:
    name = "sam"
    backend = "sam_automatic"
    automatic = True

    def __init__(self, cfg: dict, device: str = "cpu", precision: str = "bf16"):
        checkpoint = cfg.get("checkpoint")
        if not checkpoint:
            raise CheckpointError("segment.sam needs a SAM checkpoint: set segment.sam.checkpoint or fetch one")
        # A transformers model folder is read (and its sha256 recorded) through its weights file.
        self.checkpoint = str(weights_file(checkpoint))
        self.checkpoint_sha256 = cached_checkpoint_sha256(self.checkpoint)
        self.model_name = f"SAM ViT-{cfg['model_type'].split('_')[1].upper()}"
        self.device = torch.device(device)
        self.precision = precision
        self.net = load_sam_network(cfg["model_type"], self.checkpoint, cfg.get("arch")).to(self.device).eval()
        # The generator's predictor calls the mask decoder itself: run just that block in bf16.
        self.net.mask_decoder = _Timed(Autocast(self.net.mask_decoder, self.device, precision), self)
        self.generator = BatchedRleGenerator(self.net, output_mode="coco_rle", **generator_kwargs(cfg["generator"]))
        self.predictor = _EmbeddingPredictor(self.net, self.device, precision)
        self.generator.predictor = self.predictor
        self.filter_cfg = cfg["filter"]
        self.dropped: Counter = Counter()
        # "decoder": the generator's whole call (mask decoder, upsampling, stability scores, NMS,
        # RLE) and the radiology filters; "mask_decoder": the network's decoder calls alone.
        self.timings = {"encoder": 0.0, "decoder": 0.0, "mask_decoder": 0.0}

    def prepare(self, image: np.ndarray) -> np.ndarray:
        """SamPredictor's own resize (longest side to the input size); runs in the loader thread."""
        return self.predictor.transform.apply_image(image)

    @torch.inference_mode()
    def encode(self, images: list[np.ndarray], prepared: list | None = None) -> list[dict]:
        """Embeddings of a batch of images in one encoder call (SAM's normalisation and padding)."""
        prepped = prepared if prepared is not None else [self.prepare(img) for img in images]
        batch = torch.cat(
            [
                self.net.preprocess(torch.as_tensor(p, device=self.device).permute(2, 0, 1)[None].float())
                for p in prepped
            ]
        )
        with timed(self.timings, "encoder", self.device), autocast(self.device, self.precision):
            features = self.net.image_encoder(batch).float()
        return [
            {"features": features[i : i + 1], "input_size": p.shape[:2], "original_size": img.shape[:2]}
            for i, (img, p) in enumerate(zip(images, prepped))
        ]

    def generate(self, enc: dict, image: np.ndarray) -> list[Candidate]:
        """The filtered automatic masks of one image, largest first."""
        with timed(self.timings, "decoder", self.device):
            self.predictor.use_embedding(enc["features"], enc["input_size"], enc["original_size"])
            anns = self.generator.generate(image)
            cands = [_candidate(a) for a in anns]
            kept, dropped = filter_masks(cands, image.shape[:2], self.filter_cfg)
        self.dropped.update(dropped)
        self.dropped["kept"] += len(kept)
        return kept


def _candidate(ann: dict) -> Candidate:
    rle = ann["segmentation"]
    # pycocotools' box (pixel extents) rather than SAM's inclusive max-index box, so SAM and
    # MedSAM masks report boxes the same way.
    bbox = mask_utils.toBbox({"size": rle["size"], "counts": rle["counts"].encode("ascii")})
    return Candidate(
        rle={"size": [int(s) for s in rle["size"]], "counts": rle["counts"]},
        area=int(ann["area"]),
        bbox=(float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3])),
        score=float(ann["predicted_iou"]),
        stability=float(ann["stability_score"]),
    )
