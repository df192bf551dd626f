# Ingest: read each source, split it, plan segmentation and release shards.


rule sample_data:
    output:
        json=RESOURCES / "sample" / "{dataset}" / "VQA_RAD Dataset Public.json",
    log:
        LOGS / "sample_data" / "{dataset}.log",
    conda:
        "../envs/loclens.yaml"
    params:
        out=lambda w: RESOURCES / "sample" / w.dataset,
        n=lambda w: config["datasets"][w.dataset].get("n_images", 8),
        seed=config["seed"],
    shell:
        "loclens sample --out {params.out:q} --n-images {params.n} --seed {params.seed} > {log:q} 2>&1"


checkpoint ingest:
    input:
        ingest_input,
    output:
        records=INGEST / "{dataset}" / RECORDS_FILE,
        rejects=INGEST / "{dataset}" / REJECTS_FILE,
        plan=INGEST / "{dataset}" / PLAN_FILE,
    log:
        LOGS / "ingest" / "{dataset}.log",
    conda:
        "../envs/loclens.yaml"
    params:
        settings=lambda w: as_json(stages.ingest_settings(config, w.dataset)),
        out=lambda w: INGEST / w.dataset,
    shell:
        "loclens ingest --dataset {wildcards.dataset} --settings {params.settings:q} --out {params.out:q} > {log:q} 2>&1"
