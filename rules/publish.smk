# Publish: push the validated release to a Hugging Face dataset repo in one commit. Only when
# asked (`snakemake publish`), never part of the default run. The output records the commit id,
# so an unchanged release is not pushed again; the token comes from HF_TOKEN or `hf auth login`.


rule publish:
    input:
        validation=QC / "validation.json",
        manifest=RELEASE / "manifest.json",
        card=RELEASE / "README.md",
    output:
        RESULTS / "publish" / "commit.json",
    log:
        LOGS / "publish.log",
    localrule: True
    conda:
        "../envs/loclens.yaml"
    params:
        release=RELEASE,
        args=publish_args,
    shell:
        "loclens publish {params.release:q} {params.args} --validation {input.validation:q}"
        " --record {output:q} > {log:q} 2>&1"
