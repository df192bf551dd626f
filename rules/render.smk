# Render: lens views for one release shard, written straight into the release folder
# (atomically). Pure CPU and deterministic.


rule render:
    input:
        unpack(render_masks),
        records=INGEST / "{dataset}" / RECORDS_FILE,
        plan=INGEST / "{dataset}" / PLAN_FILE,
        # Shards that render views of this shard's images first (an image in two splits):
        # their rows' views are copied, not rendered again.
        views=render_views_from,
    output:
        RELEASE / "{dataset}" / "{split}-{index}-of-{total}.parquet",
    log:
        LOGS / "render" / "{dataset}" / "{split}-{index}-of-{total}.log",
    conda:
        "../envs/loclens.yaml"
    params:
        settings=as_json(stages.render_settings(config)),
        masks=render_masks_args,
        seed=config["seed"],
        config_hash=lambda w: stages.build_hash(config, w.dataset),
        shard=lambda w: f"{w.split}-{w.index}-of-{w.total}.parquet",
        release=RELEASE,
    shell:
        "loclens render --records {input.records:q} --plan {input.plan:q} --shard {params.shard} {params.masks}"
        " --settings {params.settings:q} --seed {params.seed} --config-hash {params.config_hash}"
        " --out {output:q} --release-dir {params.release:q} > {log:q} 2>&1"
