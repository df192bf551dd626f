# Download: fetch the real datasets into <resources>/<name>. The ingest of a dataset that lives
# there reads its download record, so the default target downloads what is not there yet (files
# already in place are only unpacked and recorded, without network); `snakemake download` fetches
# them alone. Runs on the submit host (localrule), where a cluster has internet.


rule download_dataset:
    output:
        RESOURCES / "{dataset}" / DOWNLOAD_RECORD,
    log:
        LOGS / "download" / "{dataset}.log",
    localrule: True
    conda:
        "../envs/loclens.yaml"
    params:
        what=lambda w: download_origin(w.dataset, config["datasets"][w.dataset]),
        out=lambda w: RESOURCES / w.dataset,
    shell:
        "loclens download {params.what:q} --out {params.out:q} 2>&1 | tee {log:q}"


rule download:
    input:
        download_targets(),
    localrule: True


# Before any job runs (not in dry runs): on a machine that cannot download, stop at once with one
# message naming every dataset and checkpoint to fetch by hand and where to put it, rather than
# failing at the first download job. Online, only inputs that nothing fetches are reported here;
# their own jobs fail later with the same advice.
onstart:
    try:
        for item in preflight.check(config):
            logger.warning(f"loclens: {item.key} needs {item.get}, which nothing fetches; put it at: {item.put}")
    except preflight.PreflightError as exc:
        raise WorkflowError(str(exc)) from None
