# Train: phase 1 `align` (original + two lens views vs organ text, DCL) then phase 2 `vqa`
# (question + answer, InfoNCE) starting from phase 1's model. Reads only the release.
# Not part of `all`: run `snakemake train`. GPUs: train.nproc_per_node (> 1 runs torchrun).
# train.model picks the model: vlm (the paper's method in a Hugging Face VLM, train.vlm) or
# contrastive (the offline quick model); both run through the same two rules.


rule train_align:
    input:
        unpack(train_release_input),
    output:
        model=TRAIN / "align" / "final" / "model.safetensors",
        losses=TRAIN / "align" / "losses.csv",
    log:
        LOGS / "train" / "align.log",
    conda:
        "../envs/train.yaml"
    threads: 4
    resources:
        gpu=config["train"]["nproc_per_node"],
    params:
        settings=lambda w: as_json(stages.train_settings(config, "align")),
        release=train_release(),
        out=TRAIN / "align",
    shell:
        "OMP_NUM_THREADS={threads} loclens train --phase align --release {params.release:q}"
        " --settings {params.settings:q} --out {params.out:q} > {log:q} 2>&1"


rule train_vqa:
    input:
        unpack(train_release_input),
        init=TRAIN / "align" / "final" / "model.safetensors",
    output:
        model=TRAIN / "vqa" / "final" / "model.safetensors",
        losses=TRAIN / "vqa" / "losses.csv",
    log:
        LOGS / "train" / "vqa.log",
    conda:
        "../envs/train.yaml"
    threads: 4
    resources:
        gpu=config["train"]["nproc_per_node"],
    params:
        settings=lambda w: as_json(stages.train_settings(config, "vqa")),
        release=train_release(),
        init=TRAIN / "align" / "final",
        out=TRAIN / "vqa",
    shell:
        "OMP_NUM_THREADS={threads} loclens train --phase vqa --release {params.release:q} --init {params.init:q}"
        " --settings {params.settings:q} --out {params.out:q} > {log:q} 2>&1"


rule train:
    input:
        rules.train_vqa.output.model,
