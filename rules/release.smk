# Release: manifest (row counts, sha256 per shard, accounting) and dataset card. The manifest
# is written last: its presence marks a complete release.


rule release:
    input:
        shards=all_release_shards,
        masks=all_segment_caches,
        plans=expand(INGEST / "{dataset}" / PLAN_FILE, dataset=DATASETS),
        rejects=expand(INGEST / "{dataset}" / REJECTS_FILE, dataset=DATASETS),
        records=expand(INGEST / "{dataset}" / RECORDS_FILE, dataset=DATASETS),
    output:
        manifest=RELEASE / "manifest.json",
        card=RELEASE / "README.md",
    log:
        LOGS / "release.log",
    conda:
        "../envs/loclens.yaml"
    params:
        settings=as_json(stages.release_settings(config)),
        release=RELEASE,
    shell:
        "loclens release --release-dir {params.release:q} --plans {input.plans:q} --masks {input.masks:q}"
        " --settings {params.settings:q} > {log:q} 2>&1"
