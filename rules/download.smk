# Download: fetch the real datasets into <resources>/<name> when the user asks for it
# (`snakemake download`); never part of the default target. Runs on the submit host
# (localrule), where a cluster has internet. Offline, the job fails with the instructions of
# what to download by hand and where to put it (printed and in the log).


rule download_dataset:
    output:
        RESOURCES / "{dataset}" / DOWNLOAD_RECORD,
    params:
        what=lambda w: download_origin(w.dataset, config["datasets"][w.dataset]),
        out=lambda w: RESOURCES / w.dataset,
    localrule: True
    log:
        LOGS / "download" / "{dataset}.log",
    conda:
        "../envs/loclens.yaml"
    shell:
        "loclens download {params.what:q} --out {params.out:q} 2>&1 | tee {log:q}"


rule download:
    localrule: True
    input:
        download_targets(),
