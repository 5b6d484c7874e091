# Evaluate a base model on every benchmark (the "before RL" row).
rule evaluate_base:
    input:
        model=model_input,
        benchmarks=benchmark_files(),
    output:
        summary=paths.results(paths.EVAL_BASE_SUMMARY),
        samples=directory(paths.results(paths.EVAL_BASE_SAMPLES)),
    priority: PRIORITY_SHORT
    log:
        "logs/evaluate_base/{model}.log",
    benchmark:
        "benchmarks/evaluate_base/{model}.tsv"
    params:
        spec=eval_spec,
        model=lambda wildcards: config["models"][wildcards.model]["path"],
    threads: config["evaluation"]["threads"]
    resources:
        gpu=EVAL_GPUS,
    conda:
        EVAL_ENV
    shell:
        "spurious evaluate --spec {params.spec:q} --model-dir {params.model:q} "
        "--out-summary {output.summary:q} --out-samples {output.samples:q} --threads {threads} > {log:q} 2>&1"


# Evaluate every checkpoint of one run on every benchmark. The run's metrics.jsonl
# (published last, so it marks a finished run; small, so Snakemake compares its
# checksum, not just its mtime) links the evaluation to its training: a run that
# retrains in the same snakemake call is re-evaluated. The checkpoint folder is
# `ancient` so a `dvc checkout`/`pull` (new mtimes, same content) does not.
rule evaluate_run:
    input:
        metrics=paths.results(paths.TRAIN_METRICS),
        checkpoints=ancient(paths.results(paths.TRAIN_CHECKPOINTS)),
        benchmarks=benchmark_files(),
    output:
        summary=paths.results(paths.EVAL_RUN_SUMMARY),
        samples=directory(paths.results(paths.EVAL_RUN_SAMPLES)),
    priority: PRIORITY_SHORT
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
        gpu=EVAL_GPUS,
    conda:
        EVAL_ENV
    shell:
        "spurious evaluate --spec {params.spec:q} --checkpoints {input.checkpoints:q} "
        "--out-summary {output.summary:q} --out-samples {output.samples:q} --threads {threads} > {log:q} 2>&1"


# Phase target: every evaluation.
rule evaluate_all:
    input:
        base_evaluations(),
        run_evaluations(),
