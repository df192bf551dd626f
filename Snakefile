# loclens: build localization-lens datasets (ingest -> segment -> render -> release).
# Quick start: `snakemake --cores 2` builds the embedded sample dataset offline.
# All logic lives in the `loclens` package; rules only call its CLI.
from snakemake.utils import min_version

min_version("8.0")


configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/ingest.smk"
include: "rules/segment.smk"
include: "rules/render.smk"
include: "rules/release.smk"
include: "rules/train.smk"


rule all:
    default_target: True
    input:
        RELEASE / "manifest.json",
