# Normalize one dataset (hub id, local copy, generator or the one-shot example)
# into JSONL records {id, prompt, answer, source}; templates come later, per model.
rule prepare_dataset:
    input:
        dataset_local_inputs,
    output:
        paths.results(paths.DATASET),
    log:
        "logs/prepare_dataset/{dataset}.log",
    benchmark:
        "benchmarks/prepare_dataset/{dataset}.tsv"
    params:
        spec=dataset_spec,
    conda:
        CPU_ENV
    shell:
        "spurious prepare-data --spec {params.spec:q} --out {output:q} > {log:q} 2>&1"


# Phase target: every dataset of the config.
rule prepare_data:
    input:
        [data_file(d) for d in config["datasets"]],
