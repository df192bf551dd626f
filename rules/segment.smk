# Segment: one job per work shard of images and segmenter; GPU when present, CPU otherwise.
# Cached apart from rendering, so blend changes never re-run a model.


rule segment:
    input:
        unpack(segment_inputs),
        records=INGEST / "{dataset}" / RECORDS_FILE,
        plan=INGEST / "{dataset}" / PLAN_FILE,
    output:
        SEGMENT / "{dataset}" / "{segmenter}" / MASK_CACHE,
    log:
        LOGS / "segment" / "{dataset}" / "{segmenter}-{shard}.log",
    conda:
        "../envs/segment.yaml"
    threads: config["segment"]["threads"]
    resources:
        gpu=1,
    params:
        settings=lambda w: as_json(stages.segment_settings(config, w.segmenter)),
        device=config["segment"]["device"],
        shard=lambda w: int(w.shard),
        extra=segment_extra_args,
        workers="" if config["segment"]["workers"] is None else f"--workers {config['segment']['workers']}",
    shell:
        "OMP_NUM_THREADS={threads} loclens segment --records {input.records:q} --plan {input.plan:q}"
        " --shard {params.shard} --segmenter {wildcards.segmenter} --settings {params.settings:q}"
        " --device {params.device} --threads {threads} {params.workers} {params.extra} --out {output:q} > {log:q} 2>&1"


# Checkpoints are downloaded on the machine running Snakemake (local rules: cluster nodes are
# often offline), sha256-verified, and kept under <resources>/checkpoints/.
rule fetch_checkpoint:
    output:
        RESOURCES / "checkpoints" / "{filename}",
    log:
        LOGS / "fetch_checkpoint" / "{filename}.log",
    localrule: True
    conda:
        "../envs/loclens.yaml"
    params:
        spec=lambda w: as_json(checkpoint_download(w)),
    shell:
        "loclens fetch-checkpoint --spec {params.spec:q} --out {output:q} > {log:q} 2>&1"


rule fetch_checkpoints:
    input:
        [RESOURCES / "checkpoints" / name for name in checkpoint_downloads()],
    localrule: True
