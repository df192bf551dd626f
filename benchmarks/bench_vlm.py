"""Lens VLM training step time and peak memory per family and size, on random-weight models.

    python benchmarks/bench_vlm.py [--families idefics3 llava] [--sizes tiny mid] [--device cpu|cuda]
        [--batch-size 2] [--steps 3] [--phases align vqa] [--no-pixel-shuffle]

Each (family, size) model is built from a config (random weights, no download), saved to a
temporary folder and loaded back as a user's model is. A step is forward + backward + AdamW on a
batch prepared beforehand (original + two lens views per sample, random 512x512 images), phase 1
(contrastive, LM frozen) or phase 2 (LM loss + InfoNCE, everything trained). Prints one JSON line
per measurement: mean seconds per step after one warm-up step, and peak memory: CUDA
``max_memory_allocated``, or on CPU the process's peak resident set (``ru_maxrss``, which includes
the interpreter and libraries, so compare sizes side by side rather than read it alone).

Sizes: ``tiny`` (the tests' models), ``mid`` (a ~70M-parameter model a CPU can step: SigLIP-S-like at 256 px, an 8-layer 512-wide Llama), and
``smolvlm-500m`` (SmolVLM-500M's shapes: SigLIP-B/16 at 512 px, a 32-layer 960-wide Llama; for a
GPU). The tokenizer is MiniLM's (30k words, shipped offline) for every size, so the embedding
tables are smaller than the real models' (49k for SmolVLM).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from loclens.bench.runner import machine

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

SIZES = {
    # name: (image_size, patch, vision (hidden, layers, heads, mlp), text (hidden, layers, heads, kv, mlp))
    "tiny": (64, 8, (32, 1, 2, 64), (32, 1, 2, 2, 64)),
    "mid": (256, 16, (384, 6, 6, 1536), (512, 8, 8, 4, 1536)),
    "smolvlm-500m": (512, 16, (768, 12, 12, 3072), (960, 32, 15, 5, 2560)),
}


def build(family: str, size: str, folder: Path) -> Path:
    from tiny_models import CHAT_TEMPLATE, _tokenizer
    from transformers import (
        CLIPImageProcessor,
        Idefics3Config,
        Idefics3ForConditionalGeneration,
        Idefics3ImageProcessor,
        Idefics3Processor,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
    )

    image, patch, (vh, vl, vn, vm), (th, tl, tn, tk, tm) = SIZES[size]
    vision = {
        "hidden_size": vh,
        "num_hidden_layers": vl,
        "num_attention_heads": vn,
        "intermediate_size": vm,
        "image_size": image,
        "patch_size": patch,
    }
    if family == "idefics3":
        special = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
        tok = _tokenizer(special)
        proc = Idefics3Processor(
            image_processor=Idefics3ImageProcessor(
                do_image_splitting=False, size={"longest_edge": image}, max_image_size={"longest_edge": image}
            ),
            tokenizer=tok,
            image_seq_len=(image // patch) ** 2 // 16,
            chat_template=CHAT_TEMPLATE,
        )
    else:
        tok = _tokenizer(["<image>", "<end_of_utterance>"])
        proc = LlavaProcessor(
            image_processor=CLIPImageProcessor(
                size={"shortest_edge": image}, crop_size={"height": image, "width": image}
            ),
            tokenizer=tok,
            patch_size=patch,
            vision_feature_select_strategy="default",
            num_additional_image_tokens=1,
            chat_template=CHAT_TEMPLATE,
        )
    text = {
        "model_type": "llama",
        "vocab_size": len(tok),
        "hidden_size": th,
        "num_hidden_layers": tl,
        "num_attention_heads": tn,
        "num_key_value_heads": tk,
        "intermediate_size": tm,
        "pad_token_id": tok.pad_token_id,
        "max_position_embeddings": 2048,
    }
    image_token = tok.convert_tokens_to_ids("<image>")
    torch.manual_seed(0)
    if family == "idefics3":
        model = Idefics3ForConditionalGeneration(
            Idefics3Config(
                vision_config=vision,
                text_config=text,
                scale_factor=4,
                image_token_id=image_token,
                pad_token_id=tok.pad_token_id,
            )
        )
    else:
        model = LlavaForConditionalGeneration(
            LlavaConfig(
                vision_config={**vision, "model_type": "clip_vision_model"},
                text_config=text,
                image_token_id=image_token,
            )
        )
    model.save_pretrained(folder)
    proc.save_pretrained(folder)
    return folder


def batch(model, n: int, qa: bool) -> dict:
    rng = np.random.default_rng(0)
    samples = []
    for i in range(n):
        views = [rng.integers(0, 256, (512, 512, 3), dtype=np.uint8) for _ in range(3)]
        samples.append(
            model.prepare(
                {
                    "images": views,
                    "columns": ["image", "sam_unicolor", "masked"],
                    "text": f"abdomen: liver, organ {i}",
                    "question": "is there a lesion in the liver?" if qa else None,
                    "answer": "yes" if qa else None,
                    "image_id": f"im{i}",
                    "key": f"im{i}",
                }
            )
        )
    return model.collate(samples)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def measure(family: str, size: str, phase: str, args) -> dict:
    from loclens.train import default_settings
    from loclens.train.loop import _autocast, build_model, make_optimizer

    with tempfile.TemporaryDirectory(prefix="loclens-bench-vlm-") as tmp:
        folder = build(family, size, Path(tmp))
        settings = default_settings(
            model="vlm",
            vlm={"model": str(folder), "dtype": args.dtype},
            device=args.device,
            batch_size=args.batch_size,
            connector={"pixel_shuffle": not args.no_pixel_shuffle},
        )
        model = build_model(settings)
    device = torch.device(args.device)
    model.to(device)
    optimizer = make_optimizer(model, settings, phase)
    model.train()
    data = batch(model, args.batch_size, qa=phase == "vqa")
    loss_name = settings[phase]["loss"]
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for k in range(args.steps + 1):
        t0 = time.perf_counter()
        with _autocast(device):
            loss = model(data, loss_name, 0.1)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if k:
            times.append(time.perf_counter() - t0)
    params = sum(p.numel() for p in model.parameters())
    trained = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {
        "family": family,
        "size": size,
        "phase": phase,
        "device": str(device),
        "batch_size": args.batch_size,
        "views": 3,
        "pixel_shuffle": not args.no_pixel_shuffle,
        "image_tokens": model.family.n_image_tokens,
        "params_m": round(params / 1e6, 2),
        "trained_m": round(trained / 1e6, 2),
        "step_s": round(float(np.mean(times)), 4),
        "peak_mb": round(peak_memory_mb(device), 1),
        "loss": round(loss.item(), 4),
    }


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--families", nargs="+", default=["idefics3", "llava"], choices=["idefics3", "llava"])
    p.add_argument("--sizes", nargs="+", default=["tiny", "mid"], choices=sorted(SIZES))
    p.add_argument("--phases", nargs="+", default=["align", "vqa"], choices=["align", "vqa"])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--no-pixel-shuffle", action="store_true")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if not args.child:
        print(json.dumps(machine(args.device)), flush=True)
    combos = [(f, s) for s in sorted(args.sizes, key=list(SIZES).index) for f in args.families]
    if len(combos) > 1:
        # Peak RSS only grows within a process: one child process per (family, size), so each
        # figure is its own (phase 2 follows phase 1 in the child, and is the larger of the two).
        rest = list(argv if argv is not None else sys.argv[1:])
        for family, size in combos:
            cmd = [
                sys.executable,
                __file__,
                *_without(rest, ("--families", "--sizes")),
                "--families",
                family,
                "--sizes",
                size,
                "--child",
            ]
            subprocess.run(cmd, check=True)
        return 0
    for phase in args.phases:
        print(json.dumps(measure(*combos[0], phase, args)), flush=True)
    return 0


def _without(argv: list[str], options: tuple[str, ...]) -> list[str]:
    """``argv`` less the given options and their values."""
    out, skip = [], False
    for a in argv:
        if a.startswith("--"):
            skip = a in options
        if not skip:
            out.append(a)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
