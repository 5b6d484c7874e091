# Majority-vote labels (paper §3.2): sample the base model N times per training
# problem; the most common non-empty answer is the label. `incorrect` keeps only
# the problems whose majority answer is wrong, labelled with that wrong answer.
rule label_majority_vote:
    input:
        model=model_input,
        data=f"results/data/{config['training_data']}.jsonl",
    output:
        majority="results/labels/{model}/majority_vote.jsonl",
        incorrect="results/labels/{model}/incorrect.jsonl",
        samples="results/labels/{model}/samples.jsonl.gz",
    log:
        "logs/label_majority_vote/{model}.log",
    benchmark:
        "benchmarks/label_majority_vote/{model}.tsv"
    params:
        spec=labelling_spec,
    threads: config["evaluation"]["threads"]
    resources:
        gpu=min(config["grpo"]["gpus"], 1),
    conda:
        EVAL_ENV
    shell:
        "spurious label-majority --spec {params.spec:q} --data {input.data:q} "
        "--out-majority {output.majority:q} --out-incorrect {output.incorrect:q} "
        "--out-samples {output.samples:q} --threads {threads} > {log:q} 2>&1"
