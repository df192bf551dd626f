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
    for split, counts in plan["localization"].items():
        print(
            f"{args.dataset} {split}: {counts['qa']} QA, {counts['anatomical']} anatomical, "
            f"{counts['positioning']} positioning, {counts['localization']} with either"
        )
    print(f"{args.dataset} localization rules: {json.dumps(plan['localization_rules'])}")
    return 0


def cmd_download(args) -> int:
    from .download import download

    record = download(args.what, Path(args.out), revision=args.revision, url=args.url, timeout=args.timeout)
    print(f"{args.what}: {record['origin']} -> {args.out} ({len(record['files'])} files, checksums in {args.out}/loclens-download.json)")
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


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def cmd_bench(args) -> int:
    from .bench import BenchOptions, format_report, run_bench
    from .bench.data import make_subset
    from .config import ConfigError

    if args.export_subset:
        try:
            names = make_subset(args.vqa_rad, args.export_subset, args.n_images)
        except (ValueError, FileNotFoundError) as exc:
            print(f"loclens bench: error: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {len(names)} VQA-RAD images and their QA records to {args.export_subset}")
        return 0
    config = None
    if args.config:
        import yaml

        try:
            config = yaml.safe_load(Path(args.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{args.config}: cannot read configuration ({exc})") from None
    opts = BenchOptions(
        vqa_rad=Path(args.vqa_rad),
        n_images=args.n_images,
        device=args.device,
        naive=args.naive,
        segmenters=args.segmenters.split(",") if args.segmenters else None,
        config=config,
        max_prompts=args.max_prompts,
        repeats=args.repeats,
        box_images=args.box_images,
        scale_images=args.scale_images or [],
        scale_sides=args.scale_sides or [],
        workdir=Path(args.workdir) if args.workdir else None,
        keep=bool(args.workdir),
        quiet=args.quiet,
    )
    try:
        report = run_bench(opts)
    except (ValueError, FileNotFoundError) as exc:  # bad --segmenters, --vqa-rad, --n-images
        print(f"loclens bench: error: {exc}", file=sys.stderr)
        return 2
    print(format_report(report), end="")
    if args.json:
        from .atomic import write_json

        write_json(args.json, report)
    return 0


def _default_vqa_rad() -> str:
    """../shared/datasets/vqa_rad beside the checkout (where the project's tests find it)."""
    return str(Path(__file__).resolve().parents[3] / "shared" / "datasets" / "vqa_rad")


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

    p = sub.add_parser("download", help="fetch a real dataset (needs internet unless its files are already in --out)")
    p.add_argument("what", help="slake (Hub copy BoKelvin/SLAKE), vqa_rad (OSF release) or hub:<owner>/<name>")
    p.add_argument("--out", required=True, help="folder to put the dataset in")
    p.add_argument("--revision", help="Hub revision (branch, tag or commit); default: the latest")
    p.add_argument("--url", help="vqa_rad: another URL of the OSF zip (a mirror or file://)")
    p.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds")
    p.set_defaults(func=cmd_download)

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

    p = sub.add_parser("bench", help="measure every stage on real VQA-RAD images (and the naive mode)")
    p.add_argument("--vqa-rad", default=_default_vqa_rad(), help="the VQA-RAD release folder (default: %(default)s)")
    p.add_argument("--n-images", type=int, default=8, help="images to measure on (the first N file names)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (segmenters only)")
    p.add_argument("--naive", action="store_true", help="also run the naive mode and report the speed-up")
    p.add_argument("--segmenters", help="comma-separated family or family/backend names (default: all known)")
    p.add_argument("--config", help="a loclens config.yaml whose segment/render/release settings to use")
    p.add_argument("--max-prompts", type=int, help="override segment.medsam.max_prompts")
    p.add_argument("--repeats", type=int, default=3, help="rounds of the micro-benchmarks (best is kept)")
    p.add_argument("--box-images", type=int, default=4, help="images of the box-decoding micro-benchmark")
    p.add_argument("--scale-images", type=_int_list, help="e.g. 8,32,64: cost and peak memory vs number of images")
    p.add_argument("--scale-sides", type=_int_list, help="e.g. 256,512,1024,2048: cost vs longest image side")
    p.add_argument("--workdir", help="keep the bench files here (default: a temporary folder, removed)")
    p.add_argument("--json", help="also write the full report as JSON to this file")
    p.add_argument("--export-subset", metavar="DIR", help="only write the N-image VQA-RAD subset to DIR and exit")
    p.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(message)s")
    from .archive import ArchiveError
    from .config import ConfigError
    from .download import DownloadError
    from .imageio import ImageError
    from .sources import SourceError

    try:
        return args.func(args)
    except (ConfigError, SourceError, ImageError, DownloadError, ArchiveError) as exc:
        print(f"loclens {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
