"""``loclens``: the command line the workflow rules call (one subcommand per stage)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

log = logging.getLogger("loclens")


def _json_arg(text: str) -> dict:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None


def cmd_sample(args) -> int:
    from .sources.sample import generate_sample

    out = generate_sample(args.out, args.n_images, args.seed)
    print(f"wrote {args.n_images} sample images to {out}")
    return 0


def cmd_ingest(args) -> int:
    from .config import validate
    from .ingest import check_accounting, run_ingest

    config = validate(args.settings, source="--settings")
    plan = run_ingest(args.dataset, config, args.out)
    check_accounting(plan)
    n_rows = sum(len(s["image_ids"]) for s in plan["release_shards"])
    print(
        f"{args.dataset}: {n_rows} rows, {plan['released_qa']} QA released, {plan['rejected_qa']} rejected "
        f"(of {plan['input_records']}), {len(plan['segment_shards'])} segment shards"
    )
    return 0


def cmd_segment(args) -> int:
    from .ingest import shard_rows
    from .segment.run import run_segment_shard

    plan = json.loads(Path(args.plan).read_text())
    ids = plan["segment_shards"][args.shard]
    rows = shard_rows(args.records, ids)
    stats = run_segment_shard(args.segmenter, args.settings, rows, args.out, device=args.device)
    print(json.dumps({"shard": args.shard, **stats}))
    return 0


def cmd_render(args) -> int:
    from .ingest import shard_rows
    from .release.shards import read_mask_cache, render_shard

    plan = json.loads(Path(args.plan).read_text())
    shard = next((s for s in plan["release_shards"] if s["file"].endswith("/" + args.shard)), None)
    if shard is None:
        raise SystemExit(f"{args.plan}: no release shard named {args.shard}")
    rows = shard_rows(args.records, shard["image_ids"], shard["split"])
    caches, infos = {}, []
    for spec in args.masks or []:
        segmenter, _, paths = spec.partition("=")
        caches[segmenter], info = read_mask_cache([p for p in paths.split(",") if p])
        if info:
            infos.append(info)
    n = render_shard(rows, caches, infos, args.settings, args.seed, args.config_hash, args.out)
    print(f"{args.out}: {n} rows")
    return 0


def cmd_release(args) -> int:
    from .config import validate
    from .release.finalize import finalize_release

    config = validate(args.settings, source="--settings")
    manifest = finalize_release(Path(args.release_dir), [Path(p) for p in args.plans], config, args.masks or [])
    total = sum(s["rows"] for d in manifest["datasets"].values() for s in d["splits"].values())
    print(f"{args.release_dir}: {total} rows in {len(manifest['datasets'])} dataset(s); manifest written")
    return 0


def _train_settings(args) -> dict:
    """``--config`` file's train section, then ``--settings`` JSON, then flags; defaults filled."""
    from .config import load, validate

    settings: dict = {}
    if args.config:
        config = load(args.config)
        settings = {**config["train"], "seed": config["seed"]}
    settings.update(args.settings or {})
    if args.max_steps:
        settings.setdefault(args.phase, {})
        settings[args.phase] = {**settings[args.phase], "max_steps": args.max_steps}
    seed = settings.pop("seed", 0)
    config = validate({"datasets": {"sample": {}}, "seed": seed, "train": settings}, source="train settings")
    return {**config["train"], "seed": seed}


def cmd_train(args) -> int:
    import os
    import subprocess

    settings = _train_settings(args)
    nproc = args.nproc_per_node or settings["nproc_per_node"]
    if nproc > 1 and "LOCAL_RANK" not in os.environ:
        # Relaunch this very command under torchrun, one process per GPU (or CPU slot).
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
               "-m", "loclens.cli", *sys.argv[1:]]
        return subprocess.call(cmd)
    from .train import ReleaseError, train

    release = args.release or settings["release"]
    if not release:
        raise SystemExit("loclens train: --release (or train.release in the config) is required")
    try:
        result = train(settings, args.phase, release, args.out, init=args.init)
    except ReleaseError as exc:
        print(f"loclens train: error: {exc}", file=sys.stderr)
        return 2
    if result["rank"] == 0:
        losses = result["losses"]
        print(json.dumps({"phase": args.phase, "steps": result["steps"], "first_loss": losses[0] if losses else None,
                          "last_loss": losses[-1] if losses else None, "out": str(args.out)}))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="loclens", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("sample", help="generate the embedded synthetic sample dataset (VQA-RAD layout)")
    p.add_argument("--out", required=True)
    p.add_argument("--n-images", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("ingest", help="read a source, split it, plan shards")
    p.add_argument("--dataset", required=True)
    p.add_argument("--settings", type=_json_arg, required=True, help="ingest settings (JSON)")
    p.add_argument("--out", required=True, help="output folder (records.jsonl, rejects.jsonl, plan.json)")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("segment", help="run a segmenter over one work shard")
    p.add_argument("--records", required=True)
    p.add_argument("--plan", required=True)
    p.add_argument("--shard", type=int, required=True)
    p.add_argument("--segmenter", required=True, choices=["sam", "medsam"])
    p.add_argument("--settings", type=_json_arg, required=True, help="the segmenter's config section (JSON)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("render", help="render lens views of one release shard and write it")
    p.add_argument("--records", required=True)
    p.add_argument("--plan", required=True)
    p.add_argument("--shard", required=True, help="shard file name, e.g. train-00000-of-00002.parquet")
    p.add_argument("--masks", action="append", help="SEGMENTER=cache1,cache2 (repeatable)")
    p.add_argument("--settings", type=_json_arg, required=True, help="render config section (JSON)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--config-hash", required=True)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("release", help="write the manifest and dataset card of a release")
    p.add_argument("--release-dir", required=True)
    p.add_argument("--plans", nargs="+", required=True)
    p.add_argument("--masks", nargs="*", help="segmentation cache files (for provenance)")
    p.add_argument("--settings", type=_json_arg, required=True, help="the full configuration (JSON)")
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("train", help="train one phase (align, then vqa) on a release")
    p.add_argument("--phase", required=True, choices=["align", "vqa"])
    p.add_argument("--release", help="release folder or hf://datasets/<org>/<name>[@rev] (default: train.release)")
    p.add_argument("--out", required=True, help="output folder (final/, checkpoints/, losses.csv, losses.png)")
    p.add_argument("--init", help="model folder to start from (phase vqa: the align phase's final/)")
    p.add_argument("--config", help="a loclens config.yaml; its train: section and seed are used")
    p.add_argument("--settings", type=_json_arg, help="train settings (JSON), over --config")
    p.add_argument("--max-steps", type=int, help="cap on optimizer steps of this phase")
    p.add_argument("--nproc-per-node", type=int, help="processes (GPUs) on this node; > 1 runs torchrun")
    p.set_defaults(func=cmd_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    from .config import ConfigError
    from .imageio import ImageError
    from .sources import SourceError

    try:
        return args.func(args)
    except (ConfigError, SourceError, ImageError) as exc:
        print(f"loclens {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
