# GRPO for one (model, reward, variant, seed). Checkpoints (checkpoints/step_N)
# and metrics.jsonl are published only when the run completes; the resumable
# state lives beside them in state/, which Snakemake never deletes, so a killed
# job restarts from its last checkpoint. The state is bound to the run's spec
# (state/spec.json): a rerun after a config change starts afresh.
rule train_grpo:
    input:
        model=model_input,
        data=training_data,
    output:
        checkpoints=directory(paths.results(paths.TRAIN_CHECKPOINTS)),
        metrics=paths.results(paths.TRAIN_METRICS),
    priority: PRIORITY_TRAIN
    log:
        "logs/train_grpo/{model}/{reward}/{variant}/seed{seed}.log",
    benchmark:
        "benchmarks/train_grpo/{model}/{reward}/{variant}/seed{seed}.tsv"
    params:
        spec=run_spec,
        state=paths.results(paths.TRAIN_STATE),
    threads: config["grpo"]["threads"]
    resources:
        # OpenRLHF holds Ray, vLLM and DeepSpeed (with host-side buffers) in one job
        mem_mb=256000 if config["backend"] == "openrlhf" else 4000,
        runtime=1440,
        gpu=config["grpo"]["gpus"],
    conda:
        TRAIN_ENV
    shell:
        "spurious train --spec {params.spec:q} --data {input.data:q} --state {params.state:q} "
        "--out-checkpoints {output.checkpoints:q} --out-metrics {output.metrics:q} "
        "--threads {threads} > {log:q} 2>&1"


# Phase target: every training run of the grid.
rule train_all:
    input:
        run_outputs(paths.TRAIN_METRICS),
