# Majority-vote labels (paper §3.2): sample the base model N times per training
# problem; the most common non-empty answer is the label. `incorrect` keeps only
# the problems whose majority answer is wrong, labelled with that wrong answer.
# stats.json counts empty labels per set (labelling.empty_majority), held-out rows
# (labelling.holdout) and problems where a raw and a normalised vote disagree.
rule label_majority_vote:
    input:
        model=model_input,
        data=data_file(config["training_data"]),
    output:
        majority=paths.results(paths.LABELS, labels="majority_vote"),
        incorrect=paths.results(paths.LABELS, labels="incorrect"),
        samples=paths.results(paths.LABEL_SAMPLES),
        stats=paths.results(paths.LABEL_STATS),
    priority: PRIORITY_LONG
    log:
        "logs/label_majority_vote/{model}.log",
    benchmark:
        "benchmarks/label_majority_vote/{model}.tsv"
    params:
        spec=labelling_spec,
    threads: config["evaluation"]["threads"]
    resources:
        gpu=EVAL_GPUS,
    conda:
        EVAL_ENV
    shell:
        "spurious label-majority --spec {params.spec:q} --data {input.data:q} "
        "--out-majority {output.majority:q} --out-incorrect {output.incorrect:q} "
        "--out-samples {output.samples:q} --out-stats {output.stats:q} --threads {threads} > {log:q} 2>&1"
