# Evaluate a base model on every benchmark (the "before RL" row).
rule evaluate_base:
    input:
        model=model_input,
        benchmarks=benchmark_files(),
    output:
        summary="results/eval/{model}/base/summary.json",
        samples=directory("results/eval/{model}/base/samples"),
    log:
        "logs/evaluate_base/{model}.log",
    benchmark:
        "benchmarks/evaluate_base/{model}.tsv"
    params:
        spec=eval_spec,
        model=lambda wildcards: config["models"][wildcards.model]["path"],
    threads: config["evaluation"]["threads"]
    resources:
        gpu=min(config["grpo"]["gpus"], 1),
    conda:
        EVAL_ENV
    shell:
        "spurious evaluate --spec {params.spec:q} --model-dir {params.model:q} "
        "--out-summary {output.summary:q} --out-samples {output.samples:q} --threads {threads} > {log:q} 2>&1"


# Evaluate every checkpoint of one run on every benchmark. The checkpoints are
# `ancient` so a `dvc checkout`/`pull` (new mtimes, same content) does not
# trigger re-evaluation.
rule evaluate_run:
    input:
        checkpoints=ancient("results/train/{model}/{reward}/{variant}/seed{seed}/checkpoints"),
        benchmarks=benchmark_files(),
    output:
        summary="results/eval/{model}/{reward}/{variant}/seed{seed}/summary.json",
        samples=directory("results/eval/{model}/{reward}/{variant}/seed{seed}/samples"),
    log:
        "logs/evaluate_run/{model}/{reward}/{variant}/seed{seed}.log",
    benchmark:
        "benchmarks/evaluate_run/{model}/{reward}/{variant}/seed{seed}.tsv"
    params:
        spec=eval_spec,
        # the run's training spec: a retrained run is re-evaluated even by a separate
        # snakemake call (DVC's evaluate phase), where the ancient() checkpoints cannot tell
        run=run_spec,
    threads: config["evaluation"]["threads"]
    resources:
        gpu=min(config["grpo"]["gpus"], 1),
    conda:
        EVAL_ENV
    shell:
        "spurious evaluate --spec {params.spec:q} --checkpoints {input.checkpoints:q} "
        "--out-summary {output.summary:q} --out-samples {output.samples:q} --threads {threads} > {log:q} 2>&1"


# Phase target: every evaluation.
rule evaluate_all:
    input:
        [f"results/eval/{m}/base/summary.json" for m in config["models"]],
        [f"results/eval/{r.path}/summary.json" for r in RUNS],
