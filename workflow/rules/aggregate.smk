# Every evaluation and training run folded into one tidy table, summary
# statistics with bootstrap CIs, Code/Lang transitions, figures, the study's
# summary.md and the small files `dvc metrics show` / `dvc plots show` read.
# The resolved config is passed whole (in its own key order): any config change
# re-aggregates (cheap), and summary.md records its hash. Sample folders are read once, in parallel.
rule aggregate_results:
    input:
        base=[f"results/eval/{m}/base/summary.json" for m in config["models"]],
        base_samples=[f"results/eval/{m}/base/samples" for m in config["models"]],
        runs=[f"results/eval/{r.path}/summary.json" for r in RUNS],
        run_samples=[f"results/eval/{r.path}/samples" for r in RUNS],
        train=[f"results/train/{r.path}/metrics.jsonl" for r in RUNS],
        paper_numbers="workflow/resources/paper_numbers.csv",
        audit=audit_outputs(),
        audit_samples=[
            f"results/audit/baselines/{m}/samples"
            for m in config["models"]
            if config["audit"]["baselines"]["enabled"]
        ],
    output:
        metrics="results/aggregate/metrics.csv",
        stats="results/aggregate/summary_stats.csv",
        transitions="results/aggregate/transitions.csv",
        fig_accuracy=report(
            "results/figures/accuracy_vs_step.png",
            caption="../report/accuracy_vs_step.rst",
            category="Figures",
        ),
        fig_code=report(
            "results/figures/code_frequency_vs_step.png",
            caption="../report/code_frequency_vs_step.rst",
            category="Figures",
        ),
        fig_clip=report(
            "results/figures/clip_ablation.png",
            caption="../report/clip_ablation.rst",
            category="Figures",
        ),
        fig_transitions=report(
            "results/figures/transitions.png",
            caption="../report/transitions.rst",
            category="Figures",
        ),
        fig_contamination=report(
            "results/figures/audit_contamination.png",
            caption="../report/audit_contamination.rst",
            category="Audit",
        ),
        fig_baselines=report(
            "results/figures/audit_baselines.png",
            caption="../report/audit_baselines.rst",
            category="Audit",
        ),
        fig_clip_probe=report(
            "results/figures/audit_clip_probe.png",
            caption="../report/audit_clip_probe.rst",
            category="Audit",
        ),
        verdict=report(
            "results/aggregate/verdict.csv", caption="../report/verdict.rst", category="Audit"
        ),
        baselines="results/aggregate/baselines.csv",
        contamination="results/aggregate/contamination.csv",
        clip_probe="results/aggregate/clip_probe.csv",
        summary=report("results/summary.md", caption="../report/summary.rst", category="Summary"),
        dvc_metrics="results/metrics.json",
        dvc_plot="results/plots/accuracy.csv",
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
        "../../envs/pipeline.yaml"
    shell:
        "spurious aggregate --spec {params.spec:q} --results-dir results --out-dir results "
        "--workers {threads} > {log:q} 2>&1"
