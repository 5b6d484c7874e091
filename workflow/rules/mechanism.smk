# The mechanism map (audit.mechanism): where GRPO's clipping bias shows. One clip
# probe (clip against no_clip, paired by draw) per (model, cell) of epsilon x
# epsilon_high x updates x lr; then the table, heatmaps, the bias-vs-clipped-fraction
# fit and a paragraph per model. aggregate_mechanism is a checkpoint: the cells it
# flags get checking runs (short training runs, clip and no_clip, several seeds)
# whose trajectories are drawn beside the probe's prediction.


# One cell of the map for one base model.
rule probe_mechanism:
    input:
        model=model_input,
        data=probe_files,
    output:
        paths.results(paths.MECHANISM_CELL),
    priority: PRIORITY_LONG
    log:
        "logs/probe_mechanism/{model}/{cell}.log",
    benchmark:
        "benchmarks/probe_mechanism/{model}/{cell}.tsv"
    params:
        spec=mechanism_spec,
        model=lambda wildcards: config["models"][wildcards.model]["path"],
    threads: config["grpo"]["threads"]
    resources:
        gpu=PROBE_GPUS,
    conda:
        PROBE_ENV
    shell:
        "spurious probe-clip --spec {params.spec:q} --model-dir {params.model:q} --out {output:q} "
        "--threads {threads} > {log:q} 2>&1"


# The map's table, fit, figures and paragraphs; its `flagged` output names the cells to check.
checkpoint aggregate_mechanism:
    input:
        mechanism_cell_outputs(),
    output:
        table=paths.results(paths.MECHANISM["table"]),
        fit=paths.results(paths.MECHANISM["fit"]),
        report=paths.results(paths.MECHANISM["report"]),
        flagged=paths.results(paths.MECHANISM["flagged"]),
        fig_map=report(
            paths.results(paths.MECHANISM["fig_map"]),
            caption="../report/mechanism_map.rst",
            category="Mechanism",
        ),
        fig_scaling=report(
            paths.results(paths.MECHANISM["fig_scaling"]),
            caption="../report/mechanism_scaling.rst",
            category="Mechanism",
        ),
    log:
        "logs/aggregate_mechanism.log",
    benchmark:
        "benchmarks/aggregate_mechanism.tsv"
    params:
        spec=lambda wildcards: json.dumps(config, separators=(",", ":")),
    conda:
        CPU_ENV
    shell:
        "spurious aggregate-mechanism --spec {params.spec:q} --results-dir results --out-dir results > {log:q} 2>&1"


# A checking run of a flagged cell: the probe's random reward under the cell's settings, arm clip or no_clip.
rule train_mechanism_check:
    input:
        model=model_input,
        data=check_training_data,
    output:
        checkpoints=directory(paths.results(paths.MECHANISM_CHECK_CHECKPOINTS)),
        metrics=paths.results(paths.MECHANISM_CHECK_METRICS),
    log:
        "logs/train_mechanism_check/{model}/{cell}/{arm}/seed{seed}.log",
    benchmark:
        "benchmarks/train_mechanism_check/{model}/{cell}/{arm}/seed{seed}.tsv"
    params:
        spec=check_run_spec,
        state=paths.results(paths.MECHANISM_CHECK_STATE),
    threads: config["grpo"]["threads"]
    resources:
        mem_mb=256000 if config["backend"] == "openrlhf" else 4000,
        runtime=1440,
        gpu=config["grpo"]["gpus"],
    conda:
        TRAIN_ENV
    shell:
        "spurious train --spec {params.spec:q} --data {input.data:q} --state {params.state:q} "
        "--out-checkpoints {output.checkpoints:q} --out-metrics {output.metrics:q} "
        "--threads {threads} > {log:q} 2>&1"


# The checking runs against the probe's prediction: table, figure, paragraphs.
rule aggregate_mechanism_checks:
    input:
        flagged=paths.results(paths.MECHANISM["flagged"]),
        table=paths.results(paths.MECHANISM["table"]),
        runs=check_run_outputs,
    output:
        table=paths.results(paths.MECHANISM_CHECKS["table"]),
        report=paths.results(paths.MECHANISM_CHECKS["report"]),
        figure=report(
            paths.results(paths.MECHANISM_CHECKS["figure"]),
            caption="../report/mechanism_checks.rst",
            category="Mechanism",
        ),
    log:
        "logs/aggregate_mechanism_checks.log",
    benchmark:
        "benchmarks/aggregate_mechanism_checks.tsv"
    params:
        spec=lambda wildcards: json.dumps(config, separators=(",", ":")),
    conda:
        CPU_ENV
    shell:
        "spurious aggregate-mechanism --checks --spec {params.spec:q} --results-dir results --out-dir results "
        "> {log:q} 2>&1"


# Phase target: the map (and its checking runs, when audit.mechanism.check.enabled).
rule mechanism_all:
    input:
        mechanism_outputs(),
