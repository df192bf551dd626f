# Segment: one job per work shard of images and segmenter; GPU when present, CPU otherwise.
# Cached apart from rendering, so blend changes never re-run a model.


rule segment:
    input:
        records=INGEST / "{dataset}" / "records.jsonl",
        plan=INGEST / "{dataset}" / "plan.json",
    output:
        SEGMENT / "{dataset}" / "{segmenter}" / "shard-{shard}.parquet",
    params:
        settings=lambda w: as_json(stages.segment_settings(config, w.segmenter)),
        device=config["segment"]["device"],
        shard=lambda w: int(w.shard),
    threads: 4
    resources:
        gpu=1,
    log:
        LOGS / "segment" / "{dataset}" / "{segmenter}-{shard}.log",
    conda:
        "../envs/segment.yaml"
    shell:
        "OMP_NUM_THREADS={threads} loclens segment --records {input.records:q} --plan {input.plan:q}"
        " --shard {params.shard} --segmenter {wildcards.segmenter} --settings {params.settings:q}"
        " --device {params.device} --out {output:q} > {log:q} 2>&1"
