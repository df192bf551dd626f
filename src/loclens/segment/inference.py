"""Small pieces every segmenter's inference shares: precision and timing on a device."""

from __future__ import annotations

import contextlib
import time

import torch

#: ``bf16``: bf16 autocast on CUDA (tensor cores, half the memory traffic), full precision on
#: the CPU, where bf16 is usually slower. ``fp32``: full precision everywhere (the naive baseline).
PRECISIONS = ("bf16", "fp32")


def autocast(device: torch.device, precision: str = "bf16"):
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r}; known: {PRECISIONS}")
    if device.type == "cuda" and precision == "bf16":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


@contextlib.contextmanager
def timed(timings: dict, key: str, device: torch.device):
    """Add the wall time of the block to ``timings[key]``; waits for queued GPU work first, so
    asynchronous kernels are charged to the block that launched them."""
    t0 = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    timings[key] = timings.get(key, 0.0) + time.perf_counter() - t0


def _as_float(out):
    if isinstance(out, tuple):
        return tuple(_as_float(o) for o in out)
    return out.float() if torch.is_tensor(out) and out.is_floating_point() else out


class Autocast(torch.nn.Module):
    """Runs a block (a SAM mask decoder) under ``autocast`` and hands back float32, for code
    that calls the block itself (SamPredictor.predict_torch): only the transformer runs in
    bf16, while the prompt encoder's sin/cos positional encodings, mask upsampling, stability
    scores and thresholds stay in float32."""

    def __init__(self, module: torch.nn.Module, device: torch.device, precision: str):
        super().__init__()
        self.module = module
        self.device_ = device
        self.precision = precision

    def forward(self, *args, **kwargs):
        with autocast(self.device_, self.precision):
            return _as_float(self.module(*args, **kwargs))


#: Box prompts decoded per mask-decoder call, by device type. SAM's decoder copies the image
#: embedding for every prompt, so its work is linear in prompts and batching saves no FLOPs; on
#: a CPU a call of many prompts moves tensors far larger than the cache, so small calls are
#: faster (side by side: ``benchmarks/cpu_micro.py``; BENCHMARKS.md). A GPU takes all at once.
DECODER_CHUNK = {"cpu": 2}


def decode_boxes(
    net, embedding: torch.Tensor, boxes: torch.Tensor, device: torch.device, precision: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """All N boxes (N x 4, in the model's input frame) of one image through a SAM-style
    network's mask decoder, in calls of ``DECODER_CHUNK`` boxes (the decoder repeats the
    (1, C, h, w) embedding per box itself). Prompt and positional encodings are computed in
    float32 (bf16 would blur the sin/cos of box coordinates); the decoder runs under
    ``autocast``. Returns low-resolution mask logits (N, 1, h', w') and predicted IoU (N), as
    float32."""
    image_pe = net.prompt_encoder.get_dense_pe()
    step = DECODER_CHUNK.get(device.type) or len(boxes)
    logits, iou = [], []
    for start in range(0, len(boxes), step):
        sparse, dense = net.prompt_encoder(points=None, boxes=boxes[start : start + step, None, :], masks=None)
        with autocast(device, precision):
            chunk_logits, chunk_iou = net.mask_decoder(
                image_embeddings=embedding,
                image_pe=image_pe,
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=False,
            )
        logits.append(chunk_logits.float())
        iou.append(chunk_iou.float()[:, 0])
    return torch.cat(logits), torch.cat(iou)
