# "Is the gain real?": the audit of the base models (contamination, prompt-robust
# baselines, clipping bias). The clean benchmarks are ordinary benchmarks
# (evaluate.smk evaluates them for every checkpoint); the verdict table is
# written by aggregate_results from all of these.


# Partial-prompt contamination audit of one base model on every audited dataset.
rule audit_contamination:
    input:
        model=model_input,
        datasets=contamination_files,
    output:
        summary=paths.results(paths.CONTAMINATION_SUMMARY),
        samples=directory(paths.results(paths.CONTAMINATION_SAMPLES)),
    priority: PRIORITY_SHORT
    log:
        "logs/audit_contamination/{model}.log",
    benchmark:
        "benchmarks/audit_contamination/{model}.tsv"
    params:
        spec=contamination_spec,
        model=lambda wildcards: config["models"][wildcards.model]["path"],
    threads: config["evaluation"]["threads"]
    resources:
        gpu=EVAL_GPUS,
    conda:
        EVAL_ENV
    shell:
        "spurious audit-contamination --spec {params.spec:q} --model-dir {params.model:q} "
        "--out-summary {output.summary:q} --out-samples {output.samples:q} --threads {threads} > {log:q} 2>&1"


# The base model under every baseline prompt template (chat, plain, boxed, r1, few-shot).
rule evaluate_baselines:
    input:
        model=model_input,
        benchmarks=baseline_files,
    output:
        summary=paths.results(paths.BASELINES_SUMMARY),
        samples=directory(paths.results(paths.BASELINES_SAMPLES)),
    priority: PRIORITY_LONG
    log:
        "logs/evaluate_baselines/{model}.log",
    benchmark:
        "benchmarks/evaluate_baselines/{model}.tsv"
    params:
        spec=baselines_spec,
        model=lambda wildcards: config["models"][wildcards.model]["path"],
    threads: config["evaluation"]["threads"]
    resources:
        gpu=EVAL_GPUS,
    conda:
        EVAL_ENV
    shell:
        "spurious evaluate-baselines --spec {params.spec:q} --model-dir {params.model:q} "
        "--out-summary {output.summary:q} --out-samples {output.samples:q} --threads {threads} > {log:q} 2>&1"


# Clipping-bias probe: K one-step updates per variant from the frozen base model.
rule probe_clip_bias:
    input:
        model=model_input,
        data=probe_files,
    output:
        paths.results(paths.CLIP_PROBE),
    priority: PRIORITY_LONG
    log:
        "logs/probe_clip_bias/{model}.log",
    benchmark:
        "benchmarks/probe_clip_bias/{model}.tsv"
    params:
        spec=probe_spec,
        model=lambda wildcards: config["models"][wildcards.model]["path"],
    threads: config["grpo"]["threads"]
    resources:
        gpu=PROBE_GPUS,
    conda:
        PROBE_ENV
    shell:
        "spurious probe-clip --spec {params.spec:q} --model-dir {params.model:q} --out {output:q} "
        "--threads {threads} > {log:q} 2>&1"


# Phase target: every audit output of the config, the mechanism map (mechanism.smk) included.
rule audit_all:
    input:
        audit_outputs(),
        mechanism_outputs(),
