# Quality control, the last step of a build: validate the release (exit 0 only when every check
# holds) and draw the QC gallery per dataset. Both appear in `snakemake --report`.


rule validate:
    input:
        manifest=RELEASE / "manifest.json",
        card=RELEASE / "README.md",
        shards=all_release_shards,
        records=expand(INGEST / "{dataset}" / RECORDS_FILE, dataset=DATASETS),
    output:
        report(
            QC / "validation.json",
            caption="../workflow/report/validation.rst",
            category="Quality control",
            subcategory="Validation",
        ),
    log:
        LOGS / "validate.log",
    conda:
        "../envs/loclens.yaml"
    params:
        release=RELEASE,
        ingest=INGEST,
    shell:
        "loclens validate {params.release:q} --ingest {params.ingest:q} --report {output:q} > {log:q} 2>&1"


rule gallery:
    input:
        manifest=RELEASE / "manifest.json",
        shards=dataset_release_shards,
    output:
        summary=report(
            QC / "{dataset}" / "summary.png",
            caption="../workflow/report/summary.rst",
            category="Quality control",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "summary"},
        ),
        samples=report(
            directory(QC / "{dataset}" / "samples"),
            patterns=["{split}.png"],
            caption="../workflow/report/samples.rst",
            category="Quality control",
            subcategory="{dataset}",
            labels={"dataset": "{dataset}", "figure": "samples {split}"},
        ),
    log:
        LOGS / "gallery" / "{dataset}.log",
    conda:
        "../envs/loclens.yaml"
    params:
        release=RELEASE,
        out=lambda w: QC / w.dataset,
        n=config["qc"]["images_per_split"],
        seed=config["seed"],
    shell:
        "loclens gallery {params.release:q} --dataset {wildcards.dataset} --out {params.out:q}"
        " --images-per-split {params.n} --seed {params.seed} > {log:q} 2>&1"
