"""``loclens``: the command line the workflow rules call (one subcommand per stage)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .schema import SEGMENTERS

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
    print(
        f"{args.dataset}: {plan.rows} rows, {plan.released_qa} QA released, {plan.rejected_qa} rejected "
        f"(of {plan.input_records}), {len(plan.segment_shards)} segment shards"
    )
    for split, counts in plan.localization.items():
        print(
            f"{args.dataset} {split}: {counts['qa']} QA, {counts['anatomical']} anatomical, "
            f"{counts['positioning']} positioning, {counts['localization']} with either"
        )
    print(f"{args.dataset} localization rules: {json.dumps(plan.localization_rules)}")
    return 0


def cmd_download(args) -> int:
    from .download import download

    record = download(args.what, Path(args.out), revision=args.revision, url=args.url, timeout=args.timeout)
    print(
        f"{args.what}: {record['origin']} -> {args.out} ({len(record['files'])} files, checksums in {args.out}/loclens-download.json)"
    )
    return 0


def _mask_caches(specs: list[str] | None) -> tuple[dict, list[dict]]:
    """``SEGMENTER=cache1,cache2`` arguments -> segmenter -> image_id -> masks (and provenance)."""
    from .shard_jobs import open_mask_caches

    paths = {}
    for spec in specs or []:
        segmenter, _, files = spec.partition("=")
        paths[segmenter] = [p for p in files.split(",") if p]
    return open_mask_caches(paths)


def cmd_segment(args) -> int:
    from .config import validate_settings
    from .plan import read_plan
    from .segment import checkpoints
    from .shard_jobs import segment_job

    cfg = validate_settings(args.settings, f"segment.{args.segmenter}", "segment", shared=("read_max_side",))
    if not checkpoints.uses_packaged_weights(args.segmenter, cfg):
        path = args.checkpoint or checkpoints.checkpoint_target(args.segmenter, cfg, args.resources)
        cfg["checkpoint"] = str(checkpoints.require(path, args.segmenter, cfg, args.resources))
    context, _ = _mask_caches(args.context_masks)
    stats = segment_job(
        read_plan(args.plan),
        args.shard,
        args.records,
        args.segmenter,
        cfg,
        args.out,
        device=args.device,
        context_masks=context,
        workers=args.workers,
        threads=args.threads,
        set_torch_threads=True,
    )
    print(json.dumps({"shard": args.shard, **stats}))
    return 0


def cmd_fetch_checkpoint(args) -> int:
    """Download checkpoints (sha256-verified) into <resources>/checkpoints/: one explicit
    ``--spec`` (what the workflow rule runs), or every segmenter of a config that needs one."""
    from .config import load
    from .segment import checkpoints
    from .stages import enabled_segmenters

    if args.spec:
        if not args.out:
            raise SystemExit("loclens fetch-checkpoint: --spec needs --out")
        print(f"{args.out}: sha256 {checkpoints.fetch(args.spec, args.out)}")
        return 0
    config = load(args.config)
    for name in args.segmenter or enabled_segmenters(config):
        cfg = config["segment"][name]
        weights = checkpoints.weights(name, cfg, config["resources"])
        if weights.kind == checkpoints.PACKAGED:
            print(f"segment.{name}: weights ship with an installed package; nothing to fetch")
        elif weights.kind == checkpoints.LOCAL:
            checkpoints.require(weights.path, name, cfg, config["resources"])
            print(f"segment.{name}: local checkpoint {weights.path}")
        else:
            assert weights.spec is not None and weights.path is not None  # a download has both
            print(f"segment.{name}: {weights.path} sha256 {checkpoints.fetch(weights.spec, weights.path)}")
    return 0


def cmd_render(args) -> int:
    from .config import validate_settings
    from .plan import PlanError, read_plan
    from .shard_jobs import render_job

    settings = validate_settings(args.settings, "render", "render")
    try:
        shard = read_plan(args.plan).release_shard(args.shard)
    except PlanError as exc:
        raise SystemExit(f"{args.plan}: {exc}") from None
    caches, infos = _mask_caches(args.masks)
    # Shards sit at <release>/<dataset>/<file>; the plan names the shards it copies views from
    # relative to <release>.
    release_dir = Path(args.release_dir) if args.release_dir else Path(args.out).parent.parent
    done = render_job(shard, args.records, caches, infos, settings, args.seed, args.config_hash, release_dir, args.out)
    print(f"{args.out}: {done.written} rows ({shard.copied_rows} with views copied from earlier shards)")
    return 0


def cmd_release(args) -> int:
    from .config import validate
    from .release.finalize import finalize_release

    config = validate(args.settings, source="--settings")
    manifest = finalize_release(Path(args.release_dir), [Path(p) for p in args.plans], config, args.masks or [])
    total = sum(s["rows"] for d in manifest["datasets"].values() for s in d["splits"].values())
    print(f"{args.release_dir}: {total} rows in {len(manifest['datasets'])} dataset(s); manifest written")
    return 0


def cmd_validate(args) -> int:
    from .atomic import write_json
    from .release.validate import validate_release

    report = validate_release(Path(args.release), ingest_root=args.ingest, deep=not args.quick)
    if args.report:
        write_json(args.report, report.to_dict())
    print(report.text(), file=sys.stdout if report.ok else sys.stderr)
    return 0 if report.ok else 1


def cmd_gallery(args) -> int:
    from .release.gallery import make_gallery

    for path in make_gallery(args.release, args.dataset, args.out, args.images_per_split, args.seed):
        print(path)
    return 0


def cmd_publish(args) -> int:
    from .release.publish import publish

    plan, record = publish(
        args.release,
        args.repo,
        revision=args.revision,
        private=not args.public,
        dry_run=args.dry_run,
        message=args.message,
        record_path=args.record,
        validation_report=args.validation,
        compare_remote=args.compare_remote,
    )
    print(plan.text())
    if record is not None:
        state = "pushed commit" if record["pushed"] else "nothing changed; remote head is"
        print(f"{state} {record['commit']} (datasets/{record['repo_id']}@{record['revision']})")
    return 0


def cmd_evaluate(args) -> int:
    from .config import validate_settings
    from .evaluate.answerers import load_answerer
    from .evaluate.grid import make_cell
    from .evaluate.run import evaluate_model

    settings = validate_settings(args.settings, "evaluate", "evaluate")
    cell = make_cell(*args.cell.split("/")) if args.cell else None
    answerer = load_answerer(args.checkpoint, device=args.device)
    run = {"cell": cell.name if cell else None, "seed": args.seed, "checkpoint": str(args.checkpoint)}
    result = evaluate_model(args.release, args.datasets, settings, answerer, args.out, run)
    combined = result["metrics"]["combined"]["all"]
    print(json.dumps({k: combined[k] for k in ("n_questions", "closed_accuracy", "open_recall")}))
    return 0


def cmd_tables(args) -> int:
    from .config import validate_settings
    from .evaluate.run import make_tables

    paths = make_tables(args.metrics, validate_settings(args.settings, "evaluate", "tables"), args.out)
    print("\n".join(sorted(paths.values())))
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
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc-per-node={nproc}",
            "-m",
            "loclens.cli",
            *sys.argv[1:],
        ]
        return subprocess.call(cmd)
    from .train import train

    release = args.release or settings["release"]
    if not release:
        raise SystemExit("loclens train: --release (or train.release in the config) is required")
    result = train(settings, args.phase, release, args.out, init=args.init)
    if result["rank"] == 0:
        losses = result["losses"]
        print(
            json.dumps(
                {
                    "phase": args.phase,
                    "steps": result["steps"],
                    "first_loss": losses[0] if losses else None,
                    "last_loss": losses[-1] if losses else None,
                    "out": str(args.out),
                }
            )
        )
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
        encoder_batches=args.encoder_batches,
        train_samples=args.train_samples,
        scale_images=args.scale_images or [],
        scale_sides=args.scale_sides or [],
        model=args.model,
        workers=args.workers if args.workers is not None else [0, 1, 2],
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
    """The full release in ../shared/datasets/vqa_rad beside the checkout (where benchmarks find it)."""
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
    p.add_argument("--segmenter", required=True, choices=SEGMENTERS)
    p.add_argument("--settings", type=_json_arg, required=True, help="the segmenter's config section (JSON)")
    p.add_argument("--device", default="auto", help="auto (a free visible GPU, else CPU), cpu, cuda or cuda:N")
    p.add_argument("--checkpoint", help="model weights (default: from the settings, see `fetch-checkpoint`)")
    p.add_argument("--resources", default="resources", help="folder holding checkpoints/ (default: resources)")
    p.add_argument("--context-masks", action="append", help="SEGMENTER=cache1,cache2: masks prompt sources may read")
    p.add_argument(
        "--threads",
        type=int,
        help="cores of this job (default: the CPUs this process may use, e.g. SLURM's cpus_per_task)",
    )
    p.add_argument("--workers", type=int, help="loader processes (default: from --threads; 0: none)")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("fetch-checkpoint", help="download SAM / MedSAM checkpoints (sha256-verified) into resources/")
    p.add_argument("--config", default="config.yaml", help="workflow config (default: config.yaml)")
    p.add_argument("--segmenter", action="append", choices=SEGMENTERS, help="only these (default: enabled ones)")
    p.add_argument("--spec", type=_json_arg, help="one download spec {url|hf, sha256} (JSON), with --out")
    p.add_argument("--out", help="where to store the --spec download")
    p.set_defaults(func=cmd_fetch_checkpoint)

    p = sub.add_parser("render", help="render lens views of one release shard and write it")
    p.add_argument("--records", required=True)
    p.add_argument("--plan", required=True)
    p.add_argument("--shard", required=True, help="shard file name, e.g. train-00000-of-00002.parquet")
    p.add_argument("--masks", action="append", help="SEGMENTER=cache1,cache2 (repeatable)")
    p.add_argument("--settings", type=_json_arg, required=True, help="render config section (JSON)")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--config-hash", required=True)
    p.add_argument("--out", required=True)
    p.add_argument(
        "--release-dir",
        help="folder of the plan's shard files (default: two levels above --out), "
        "where the shards this one copies views from (the plan's views_from) are",
    )
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("release", help="write the manifest and dataset card of a release")
    p.add_argument("--release-dir", required=True)
    p.add_argument("--plans", nargs="+", required=True)
    p.add_argument("--masks", nargs="*", help="segmentation cache files (for provenance)")
    p.add_argument("--settings", type=_json_arg, required=True, help="the full configuration (JSON)")
    p.set_defaults(func=cmd_release)

    p = sub.add_parser("validate", help="check a release against its manifest, schema and card (exit 0 = valid)")
    p.add_argument("release", help="release folder (with manifest.json)")
    p.add_argument("--ingest", help="ingest folder (<dataset>/records.jsonl): name missing QA by qid")
    p.add_argument("--report", help="write the report as JSON here")
    p.add_argument("--quick", action="store_true", help="files, schema and card only (no row scan)")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("gallery", help="QC pictures of one dataset of a release")
    p.add_argument("release", help="release folder (with manifest.json)")
    p.add_argument("--dataset", required=True)
    p.add_argument("--out", required=True, help="folder for summary.png and samples/<split>.png")
    p.add_argument("--images-per-split", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_gallery)

    p = sub.add_parser("publish", help="push a validated release to a Hugging Face dataset repo in one commit")
    p.add_argument("release", help="release folder (with manifest.json)")
    p.add_argument("--repo", required=True, help="dataset repo id, e.g. me/loclens-vqa-rad")
    p.add_argument("--revision", default="main", help="branch to commit to")
    p.add_argument("--public", action="store_true", help="create the repo public (default: private)")
    p.add_argument("--message", help="commit message")
    p.add_argument("--dry-run", action="store_true", help="print the plan; no network (compares with --record)")
    p.add_argument("--compare-remote", action="store_true", help="with --dry-run: list the repo (read-only) to plan")
    p.add_argument("--record", help="JSON record of the push (commit id, files); read by later dry runs")
    p.add_argument("--validation", help="a passing `loclens validate --report` of this release (skips the row scan)")
    p.set_defaults(func=cmd_publish)
    p = sub.add_parser(
        "evaluate", help="answer a release's test questions with a trained model; write predictions and metrics"
    )
    p.add_argument("--release", required=True, help="release folder (with manifest.json)")
    p.add_argument("--datasets", nargs="+", required=True)
    p.add_argument("--checkpoint", required=True, help="trained model (the phase-2 checkpoint)")
    p.add_argument("--settings", type=_json_arg, required=True, help="the evaluate config section (JSON)")
    p.add_argument("--cell", help="ablation cell as LENS/LOSS/SHUFFLE, e.g. medsam/dcl/on (recorded in the metrics)")
    p.add_argument("--seed", type=int, help="training seed (recorded in the metrics)")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="output folder (predictions/<dataset>.jsonl, metrics.json)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("tables", help="Tables 1-3 and the gain plot from the runs of an ablation grid")
    p.add_argument("--metrics", nargs="+", required=True, help="metrics.json of every run")
    p.add_argument("--settings", type=_json_arg, required=True, help="the evaluate config section (JSON)")
    p.add_argument("--out", required=True, help="output folder")
    p.set_defaults(func=cmd_tables)
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
    p.add_argument(
        "--encoder-batches",
        type=_int_list,
        help="encoder batch sizes the box stage compares (default: the device's list in loclens.bench.stages.ENCODER_BATCHES_TRIED)",
    )
    p.add_argument("--train-samples", type=int, default=32, help="samples the training reader is timed on")
    p.add_argument("--scale-images", type=_int_list, help="e.g. 8,32,64: cost and peak memory vs number of images")
    p.add_argument("--scale-sides", type=_int_list, help="e.g. 256,512,1024,2048: cost vs longest image side")
    p.add_argument(
        "--model",
        help="null:ENC[+DEC]: replace the box-prompted models by a stand-in of fixed latency "
        "(ms per image for the encoder, per call for the decoder) and measure whether the pipeline keeps up",
    )
    p.add_argument("--workers", type=_int_list, help="with --model: worker process counts to compare (default: 0,1,2)")
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
    from .errors import LoclensError

    try:
        return args.func(args)
    except LoclensError as exc:
        # One line the user can act on; the message names the file, key or resource.
        print(f"loclens {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
