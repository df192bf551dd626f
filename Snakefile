# loclens: build localization-lens datasets (ingest -> segment -> render -> release).
# Quick start: `snakemake --cores 2` builds the embedded sample dataset offline;
# `snakemake --cores N --configfile config/paper.yaml` downloads and builds the paper's lens data.
# `snakemake publish` pushes the validated release to the Hub (never part of the default run).
# All logic lives in the `loclens` package; rules only call its CLI.
from snakemake.utils import min_version

min_version("8.0")


configfile: "config.yaml"


report: "workflow/report/workflow.rst"


include: "rules/common.smk"
include: "rules/ingest.smk"
include: "rules/segment.smk"
include: "rules/render.smk"
include: "rules/release.smk"
include: "rules/download.smk"
include: "rules/qc.smk"
include: "rules/publish.smk"
include: "rules/train.smk"
include: "rules/evaluate.smk"


rule all:
    default_target: True
    input:
        RELEASE / "manifest.json",
        QC / "validation.json",
        expand(QC / "{dataset}" / "summary.png", dataset=DATASETS),
