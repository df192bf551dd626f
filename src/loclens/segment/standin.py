"""A stand-in for a box-prompted segmenter's network: fixed latency, correct output shapes.

``loclens bench --model null:MS`` measures whether the pipeline around a model (image decode,
prompts, preprocessing, mask post-processing, RLE, the cache write) keeps up with a model of a
given speed, on any machine: the network's forward passes are replaced by sleeps, so a 2-core
laptop can show the rate the pipeline sustains against, say, a 20 ms GPU encoder.

Spec: ``null:ENC`` or ``null:ENC+DEC``: the encoder sleeps ENC milliseconds per image (a batch
of B images: B * ENC), the mask decoder DEC milliseconds per call (all boxes of an image are one
call); DEC defaults to 0. A sleep releases the GIL, as a GPU forward pass mostly does.

Everything around the network is the imitated backend's own: ``prepare`` is its CPU
preprocessing (LiteMedSAM's 256 px or MedSAM ViT-B's 1024 px resize and normalisation), the
batch is moved to the device as the real encoder's input would be, and the decoder returns
boolean masks at the image's resolution on the device (the box itself), like the backends'
``decode_device`` after their on-device resize and threshold. A GPU does that resize and
threshold in well under a millisecond; the stand-in folds it into its latency.
"""

from __future__ import annotations

import re
import time

import numpy as np
import torch

from .inference import timed
from .litemedsam import Encoded

_SPEC = re.compile(r"^null:(\d+(?:\.\d+)?)(?:\+(\d+(?:\.\d+)?))?$")

#: Backend -> (embedding shape of one image, input side) of the network the stand-in replaces.
SHAPES = {"litemedsam": ((256, 64, 64), 256), "medsam_vitb": ((256, 64, 64), 1024)}


def parse(spec: str) -> tuple[float, float]:
    """``null:ENC[+DEC]`` -> (encoder, decoder) latency in seconds."""
    match = _SPEC.match(spec)
    if not match:
        raise ValueError(
            f"--model {spec!r}: expected null:ENC or null:ENC+DEC (milliseconds), e.g. null:20 or null:18.5+13.2"
        )
    return float(match.group(1)) / 1000, float(match.group(2) or 0) / 1000


def _preprocessor(backend: str):
    if backend == "litemedsam":
        from .litemedsam import preprocess

        return preprocess
    if backend == "medsam_vitb":
        from .medsam_vitb import preprocess as preprocess_vitb

        size = SHAPES[backend][1]
        return lambda image: preprocess_vitb(image, size)
    raise ValueError(f"a stand-in model replaces a box-prompted backend ({sorted(SHAPES)}), not {backend!r}")


class StandIn:
    """The interface of ``LiteMedSAM`` / ``MedSAMViTB`` (prepare, encode, decode,
    decode_device) with the network replaced by fixed latencies."""

    name = "medsam"
    automatic = False

    def __init__(self, spec: str, backend: str, device: str = "cpu"):
        self.encoder_s, self.decoder_s = parse(spec)
        self.spec = spec
        self.backend = backend
        self._prepare = _preprocessor(backend)
        self.embedding_shape, self.input_size = SHAPES[backend]
        self.model_name = f"stand-in {spec} for {backend}"
        self.checkpoint = "stand-in"
        self.checkpoint_sha256 = "0" * 64
        self.device = torch.device(device)
        self.timings = {"encoder": 0.0, "decoder": 0.0}

    def prepare(self, image: np.ndarray):
        return self._prepare(image)

    @torch.inference_mode()
    def encode(self, images: list[np.ndarray], prepared: list | None = None) -> list[Encoded]:
        prepped = prepared if prepared is not None else [self.prepare(img) for img in images]
        inputs = [p[0] if isinstance(p, tuple) else p for p in prepped]
        batch = torch.from_numpy(np.stack(inputs)).to(self.device)  # the real encoder's input transfer
        with timed(self.timings, "encoder", self.device):
            time.sleep(self.encoder_s * len(images))
            emb = torch.zeros((len(images), *self.embedding_shape), device=self.device, dtype=batch.dtype)
        resized = [p[1] if isinstance(p, tuple) else (self.input_size, self.input_size) for p in prepped]
        return [Encoded(emb[i : i + 1], img.shape[:2], resized[i]) for i, img in enumerate(images)]

    @torch.inference_mode()
    def decode_device(self, enc: Encoded, boxes: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Boolean masks (N x H x W, the boxes themselves) on the device and scores (N)."""
        h, w = enc.original_hw
        with timed(self.timings, "decoder", self.device):
            if len(boxes):
                time.sleep(self.decoder_s)
            b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
            masks = torch.zeros((len(b), h, w), dtype=torch.bool, device=self.device)
            for i, (x0, y0, x1, y1) in enumerate(np.ceil(b).astype(int)):  # pixels whose index is inside the box
                masks[i, max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
            area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) / float(h * w)
            scores = torch.as_tensor(np.clip(area, 0, 1), device=self.device)
        return masks, scores

    def decode(self, enc: Encoded, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        masks, scores = self.decode_device(enc, boxes)
        return masks.cpu().numpy(), scores.cpu().numpy()
