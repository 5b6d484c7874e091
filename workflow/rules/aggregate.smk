# Every evaluation and training run folded into one tidy table, summary
# statistics with bootstrap CIs, Code/Lang transitions, figures, the study's
# summary.md and the small files `dvc metrics show` / `dvc plots show` read.
# The resolved config is passed whole (in its own key order): any config change
# re-aggregates (cheap), and summary.md records its hash. Sample folders are read once, in parallel.
rule aggregate_results:
    input:
        base=base_evaluations(),
        base_samples=[paths.results(paths.EVAL_BASE_SAMPLES, model=m) for m in config["models"]],
        runs=run_evaluations(),
        run_samples=run_outputs(paths.EVAL_RUN_SAMPLES),
        train=run_outputs(paths.TRAIN_METRICS),
        paper_numbers="workflow/spurious_rewards/resources/paper_numbers.csv",
        audit=audit_outputs(),
        # the mechanism map's paragraphs (and its checking runs'), shown in summary.md
        mechanism=[p for p in mechanism_outputs() if p.endswith(".md")],
        audit_samples=[
            paths.results(paths.BASELINES_SAMPLES, model=m)
            for m in config["models"]
            if config["audit"]["baselines"]["enabled"]
        ],
    output:
        metrics=paths.results(paths.AGGREGATE["metrics"]),
        stats=paths.results(paths.AGGREGATE["summary_stats"]),
        transitions=paths.results(paths.AGGREGATE["transitions"]),
        fig_accuracy=report(
            paths.results(paths.AGGREGATE["fig_accuracy"]),
            caption="../report/accuracy_vs_step.rst",
            category="Figures",
        ),
        fig_code=report(
            paths.results(paths.AGGREGATE["fig_code"]),
            caption="../report/code_frequency_vs_step.rst",
            category="Figures",
        ),
        fig_clip=report(
            paths.results(paths.AGGREGATE["fig_clip"]),
            caption="../report/clip_ablation.rst",
            category="Figures",
        ),
        fig_transitions=report(
            paths.results(paths.AGGREGATE["fig_transitions"]),
            caption="../report/transitions.rst",
            category="Figures",
        ),
        fig_contamination=report(
            paths.results(paths.AGGREGATE["fig_contamination"]),
            caption="../report/audit_contamination.rst",
            category="Audit",
        ),
        fig_baselines=report(
            paths.results(paths.AGGREGATE["fig_baselines"]),
            caption="../report/audit_baselines.rst",
            category="Audit",
        ),
        fig_clip_probe=report(
            paths.results(paths.AGGREGATE["fig_clip_probe"]),
            caption="../report/audit_clip_probe.rst",
            category="Audit",
        ),
        verdict=report(
            paths.results(paths.AGGREGATE["verdict"]), caption="../report/verdict.rst", category="Audit"
        ),
        baselines=paths.results(paths.AGGREGATE["baselines"]),
        contamination=paths.results(paths.AGGREGATE["contamination"]),
        clip_probe=paths.results(paths.AGGREGATE["clip_probe"]),
        summary=report(paths.results(paths.AGGREGATE["summary"]), caption="../report/summary.rst", category="Summary"),
        dvc_metrics=[paths.results(paths.DVC_METRICS, model=m) for m in config["models"]],
        dvc_plot=paths.results(paths.AGGREGATE["dvc_plot"]),
        alignment=paths.results(paths.AGGREGATE["alignment"]),
        alignment_corr=paths.results(paths.AGGREGATE["alignment_corr"]),
        fig_alignment=report(
            paths.results(paths.AGGREGATE["fig_alignment"]),
            caption="../report/alignment.rst",
            category="Figures",
        ),
    log:
        "logs/aggregate_results.log",
    benchmark:
        "benchmarks/aggregate_results.tsv"
    params:
        # not as_json: its sorted keys would lose the config's order, which carries
        # meaning here (the first benchmark is the main one; tables and figures
        # list models and rewards in config order)
        spec=lambda wildcards: json.dumps(config, separators=(",", ":")),
    threads: 4
    resources:
        mem_mb=4000,
    conda:
        CPU_ENV
    shell:
        "spurious aggregate --spec {params.spec:q} --results-dir results --out-dir results "
        "--workers {threads} > {log:q} 2>&1"
