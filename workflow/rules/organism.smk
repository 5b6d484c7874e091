# Build a toy model organism from scratch: tokenizer, corpus with the family's
# code/language mix, ~1M-parameter Qwen2 pretrained on CPU. The organisms are
# shipped pre-built, so this runs only for a new family or with
# `snakemake --forcerun build_organism`.
rule build_organism:
    output:
        directory(f"{ORGANISM_DIR}/{{model}}"),
    log:
        "logs/build_organism/{model}.log",
    benchmark:
        "benchmarks/build_organism/{model}.tsv"
    params:
        spec=organism_spec,
    threads: 2
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        CPU_ENV
    shell:
        "spurious build-organism --spec {params.spec:q} --out {output:q} --threads {threads} > {log:q} 2>&1"


# Measure an organism's priors: code frequency, P(code), accuracy by style.
rule probe_organism:
    input:
        model=f"{ORGANISM_DIR}/{{model}}",
    output:
        paths.results(paths.ORGANISM_PROBE),
    priority: PRIORITY_SHORT
    log:
        "logs/probe_organism/{model}.log",
    benchmark:
        "benchmarks/probe_organism/{model}.tsv"
    threads: 1
    conda:
        CPU_ENV
    shell:
        "spurious probe-organism --model {input.model:q} --out {output:q} --threads {threads} > {log:q} 2>&1"
