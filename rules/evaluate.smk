# Evaluate: the grid's cells (lens sources, phase-1 loss, pixel shuffle) x seeds as wildcards;
# by default the paper's eight Table 3 rows. Each cell and seed is trained (both phases, as
# `train` does), answers the test questions on original images only, and is scored; `tables`
# turns all runs into Tables 1-3 (Markdown, CSV, JSON) and the gain plot.
# Not part of `all`: run `snakemake evaluation`.


# The two training phases of a grid cell are train.smk's rules with the cell's folder and settings.
use rule train_align as experiment_align with:
    output:
        model=EXPERIMENTS / RUN / "align" / "final" / "model.safetensors",
        losses=EXPERIMENTS / RUN / "align" / "losses.csv",
    log:
        LOGS / "experiments" / f"{RUN}-align.log",
    params:
        settings=lambda w: as_json(experiment_train_settings(w, "align")),
        release=train_release(),
        out=lambda w: EXPERIMENTS / RUN.format(**w) / "align",


use rule train_vqa as experiment_vqa with:
    input:
        unpack(train_release_input),
        init=EXPERIMENTS / RUN / "align" / "final" / "model.safetensors",
    output:
        model=EXPERIMENTS / RUN / "vqa" / "final" / "model.safetensors",
        losses=EXPERIMENTS / RUN / "vqa" / "losses.csv",
    log:
        LOGS / "experiments" / f"{RUN}-vqa.log",
    params:
        settings=lambda w: as_json(experiment_train_settings(w, "vqa")),
        release=train_release(),
        init=lambda w: EXPERIMENTS / RUN.format(**w) / "align" / "final",
        out=lambda w: EXPERIMENTS / RUN.format(**w) / "vqa",


rule experiment_evaluate:
    input:
        unpack(train_release_input),
        model=EXPERIMENTS / RUN / "vqa" / "final" / "model.safetensors",
    output:
        metrics=EXPERIMENTS / RUN / "metrics.json",
    log:
        LOGS / "experiments" / f"{RUN}-evaluate.log",
    conda:
        "../envs/train.yaml"
    threads: 4
    resources:
        gpu=1,
    params:
        settings=as_json(stages.evaluate_run_settings(config)),
        release=train_release(),
        datasets=evaluate_datasets(),
        model=lambda w: EXPERIMENTS / RUN.format(**w) / "vqa" / "final",
        cell="{lens}/{loss}/{shuffle}",
        out=lambda w: EXPERIMENTS / RUN.format(**w),
        device=config["train"]["device"],
    shell:
        "OMP_NUM_THREADS={threads} loclens evaluate --release {params.release:q} --datasets {params.datasets}"
        " --checkpoint {params.model:q} --settings {params.settings:q} --cell {params.cell} --seed {wildcards.seed}"
        " --device {params.device} --out {params.out:q} > {log:q} 2>&1"


rule tables:
    input:
        experiment_metrics(),
    output:
        json=EVALUATION / "tables.json",
        markdown=EVALUATION / "tables.md",
        csv=[EVALUATION / f"{stem}.csv" for stem in TABLE_STEMS],
        plot=EVALUATION / "gains.png",
    log:
        LOGS / "tables.log",
    conda:
        "../envs/train.yaml"
    params:
        settings=as_json(config["evaluate"]),
        out=EVALUATION,
    shell:
        "loclens tables --metrics {input:q} --settings {params.settings:q} --out {params.out:q} > {log:q} 2>&1"


rule evaluation:
    input:
        rules.tables.output,
