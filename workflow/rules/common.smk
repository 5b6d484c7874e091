import json
import os
import sys

# Jobs call the `spurious` CLI of the installed package (`pip install -e .` in the venv,
# and in every conda env by its post-deploy script). Without an activated venv it is
# found next to the Python running Snakemake; a conda env puts its own bin/ first.
_env = dict(os.environ)
os.environ.update(
    PATH=os.pathsep.join(filter(None, (os.path.dirname(sys.executable), _env.get("PATH")))),
    # where the envs' post-deploy scripts install the package from
    SPURIOUS_REPO=os.path.abspath(workflow.basedir),
)

from spurious_rewards import config as cfgmod
from spurious_rewards import paths

# ----- resolve `extends:` overlays, then validate (before any job is planned) --
# Snakemake merged the config files it read (the --configfile list, else config.yaml)
# and --config on top; an overlay's base is known only from its file, so the merge
# is redone here: every file with its `extends:` chain, in order, then --config.
try:
    _resolved = cfgmod.resolve_files(workflow.configfiles, workflow.config_settings.config)
    config.clear()
    config.update(_resolved)
    cfgmod.validate(config)
    _missing = cfgmod.missing_local_models(config)  # relative to the work dir, before any job
    if _missing:
        raise cfgmod.ConfigError("invalid config:\n  - " + "\n  - ".join(_missing))
except cfgmod.ConfigError as exc:
    # name the user's file(s): Snakemake itself points at this line of common.smk
    files = ", ".join(map(str, workflow.configfiles)) or "config.yaml"
    raise WorkflowError(f"{files}: {exc}") from None

# ----- the memory plan (spurious plan): a setting that cannot fit fails here, naming the rule ---
from spurious_rewards import plan as _plan

_infeasible = _plan.check(config)
if _infeasible:
    raise WorkflowError(
        f"{', '.join(map(str, workflow.configfiles)) or 'config.yaml'}: {len(_infeasible)} job(s) cannot fit "
        "(spurious plan --configfile ... shows every estimate):\n  - " + "\n  - ".join(_infeasible)
    )

RUNS = list(cfgmod.runs(config))
STEPS = cfgmod.checkpoint_steps(config)
ORGANISM_DIR = "workflow/resources/organisms"
# conda envs (used with --use-conda only), chosen per rule by the engine and device it runs on
GPU_ENV = "../../envs/pipeline-gpu.yaml"  # CUDA torch: the TRL backend and the clip probe on a GPU
CPU_ENV = "../../envs/pipeline.yaml"
TRAIN_ENV = {
    "openrlhf": "../../envs/train-openrlhf.yaml",
    "trl": GPU_ENV if config["grpo"]["gpus"] > 0 else CPU_ENV,
}[config["backend"]]
# evaluation, labelling and the base-model audits: their own engine and GPUs
EVAL_GPUS = config["evaluation"]["gpus"]
EVAL_ENV = (
    "../../envs/eval-vllm.yaml"
    if config["evaluation"]["engine"] == "vllm" or (config["evaluation"]["engine"] == "auto" and EVAL_GPUS > 0)
    else (GPU_ENV if EVAL_GPUS > 0 else CPU_ENV)
)
# the clip probe trains like the TRL backend, on one GPU when training has GPUs
PROBE_GPUS = min(config["grpo"]["gpus"], 1)
PROBE_ENV = GPU_ENV if PROBE_GPUS > 0 else CPU_ENV

# Scheduling when the cores are fewer than the ready jobs (Snakemake starts the
# highest `priority:` first): the long jobs that nothing waits on (the probes, the
# baselines) and the labels the incorrect-label runs wait on, then training, then the
# short evaluations, so a study ends on ~15-second evaluations rather than on one
# core idling beside a late 40-second training run (about 30 s of `make run` before).
PRIORITY_LONG = 3
PRIORITY_TRAIN = 2
PRIORITY_SHORT = 1


wildcard_constraints:
    model=cfgmod.regex_alternatives(config["models"]),
    reward=cfgmod.regex_alternatives(config["rewards"]),
    variant=cfgmod.regex_alternatives(config["variants"]),
    dataset=cfgmod.regex_alternatives(config["datasets"]),
    seed=r"\d+",
    cell=cfgmod.regex_alternatives([c.id for c in cfgmod.mechanism_cells(config)]),
    arm="clip|no_clip",


# ----- input functions --------------------------------------------------------


def as_json(obj):
    """Params are passed to the CLI as one JSON argument (quoted with :q in shell)."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def dataset_spec(wildcards):
    return as_json({"name": wildcards.dataset, **config["datasets"][wildcards.dataset]})


def dataset_local_inputs(wildcards):
    """A dataset read from a local file or folder is an input (its changes rerun the rule)."""
    spec = config["datasets"][wildcards.dataset]
    if spec["kind"] == "hub" and os.path.exists(spec["path"]):
        return [spec["path"]]
    return []


def model_input(wildcards):
    """The model's local folder when it has one (an organism or a user path), else nothing (a hub id)."""
    if cfgmod.is_local_model(config, wildcards.model):
        return config["models"][wildcards.model]["path"]
    return []


def organism_spec(wildcards):
    return as_json(config["models"][wildcards.model]["organism"])


def training_data(wildcards):
    return cfgmod.training_data_path(config, wildcards.model, wildcards.reward)


def run_spec(wildcards):
    run = cfgmod.Run(wildcards.model, wildcards.reward, wildcards.variant, int(wildcards.seed))
    return as_json(cfgmod.run_spec(config, run))


def data_file(dataset):
    """A normalized dataset (rule prepare_dataset)."""
    return paths.results(paths.DATASET, dataset=dataset)


def benchmark_files(wildcards=None):
    return sorted({data_file(b["dataset"]) for b in config["benchmarks"].values()})


def eval_spec(wildcards):
    return as_json(
        {
            "model": {"name": wildcards.model, **config["models"][wildcards.model]},
            "benchmarks": {
                name: {**b, "data": data_file(b["dataset"])}
                for name, b in config["benchmarks"].items()
            },
            "evaluation": config["evaluation"],
        }
    )


def labelling_spec(wildcards):
    ev = config["evaluation"]
    return as_json(
        {
            "model": {"name": wildcards.model, **config["models"][wildcards.model]},
            **config["labelling"],
            "engine": ev["engine"],
            "batch_size": ev["batch_size"],
            "grading_workers": ev["grading_workers"],
        }
    )


# ----- the audit (audit.smk) ---------------------------------------------------


def contamination_files(wildcards):
    return [data_file(d) for d in cfgmod.contamination_datasets(config)]


def contamination_spec(wildcards):
    return as_json(
        {
            "model": {"name": wildcards.model, **config["models"][wildcards.model]},
            "datasets": {d: data_file(d) for d in cfgmod.contamination_datasets(config)},
            "contamination": config["audit"]["contamination"],
            "evaluation": config["evaluation"],
            # the CIs' level, as every other interval of the audit (the figures state it)
            "alpha": config["audit"]["verdict"]["alpha"],
        }
    )


def shots_dataset():
    return config["audit"]["baselines"]["shots_dataset"] or config["training_data"]


def baseline_files(wildcards):
    benches = config["benchmarks"]
    files = {data_file(benches[b]["dataset"]) for b in cfgmod.baseline_benchmarks(config)}
    if "few_shot" in config["audit"]["baselines"]["templates"]:
        files.add(data_file(shots_dataset()))
    return sorted(files)


def baselines_spec(wildcards):
    benches = config["benchmarks"]
    return as_json(
        {
            "model": {"name": wildcards.model, **config["models"][wildcards.model]},
            "benchmarks": {
                b: {**cfgmod.baseline_benchmark(config, b), "data": data_file(benches[b]["dataset"])}
                for b in cfgmod.baseline_benchmarks(config)
            },
            "baselines": {**config["audit"]["baselines"], "shots_data": data_file(shots_dataset())},
            "evaluation": config["evaluation"],
        }
    )


def probe_files(wildcards):
    bench = config["benchmarks"][cfgmod.verdict_benchmark(config)]
    return sorted({data_file(config["training_data"]), data_file(bench["dataset"])})


def probe_settings(model):
    """What one clip probe of ``model`` needs (a dict; the map's cells override parts of it)."""
    cp = config["audit"]["clip_probe"]
    g = config["grpo"]
    name = cfgmod.verdict_benchmark(config)
    bench = config["benchmarks"][name]
    return {
        "model": {"name": model, **config["models"][model]},
        "train_data": data_file(config["training_data"]),
        "benchmark": {"name": name, **bench, "data": data_file(bench["dataset"])},
        "grpo": g,
        "probe": {
            **cp,
            "prompts_per_rollout": cp["prompts_per_rollout"] or g["prompts_per_rollout"],
            "lr": cp["lr"] or g["lr"],
        },
        "variants": {v: config["variants"][v] for v in cfgmod.probe_variants(config)},
        "max_new_tokens": config["evaluation"]["max_new_tokens"],
        "alpha": config["audit"]["verdict"]["alpha"],
    }


def probe_spec(wildcards):
    return as_json(probe_settings(wildcards.model))


# ----- the mechanism map (mechanism.smk) ---------------------------------------
MECHANISM_CELLS = {c.id: c for c in cfgmod.mechanism_cells(config)}
MECHANISM_MODELS = cfgmod.mechanism_models(config)


def probe_rollout():
    """Samples per rollout of the probe (the map's updates divide it; config validation checks)."""
    cp, g = config["audit"]["clip_probe"], config["grpo"]
    return (cp["prompts_per_rollout"] or g["prompts_per_rollout"]) * g["group_size"]


def mechanism_spec(wildcards):
    """The probe of one map cell: clip against no_clip under the cell's clipping, updates and lr."""
    cell = MECHANISM_CELLS[wildcards.cell]
    spec = probe_settings(wildcards.model)
    draws = config["audit"]["mechanism"]["draws"] or spec["probe"]["draws"]
    spec["grpo"] = cell.grpo(config["grpo"], probe_rollout())
    spec["probe"] = {**spec["probe"], "lr": cell.lr, "draws": draws}
    spec["variants"] = cfgmod.MECHANISM_ARMS
    return as_json(spec)


def mechanism_cell_outputs():
    return [paths.results(paths.MECHANISM_CELL, model=m, cell=c) for m in MECHANISM_MODELS for c in MECHANISM_CELLS]


def check_run_spec(wildcards):
    """A checking run: the probe's random reward under the cell's clipping, updates and lr, for check.steps steps."""
    cell, chk = MECHANISM_CELLS[wildcards.cell], config["audit"]["mechanism"]["check"]
    cfg = dict(config)
    grpo = cell.grpo(config["grpo"], probe_rollout())
    grpo.update(steps=chk["steps"], save_every=chk["steps"], prompts_per_rollout=probe_rollout() // grpo["group_size"])
    cfg.update(grpo=grpo, variants=cfgmod.MECHANISM_ARMS, rewards={cfgmod.CHECK_REWARD: cfgmod.check_reward(config)})
    run = cfgmod.Run(wildcards.model, cfgmod.CHECK_REWARD, wildcards.arm, int(wildcards.seed))
    spec = cfgmod.run_spec(cfg, run)
    spec["run"] = paths.fill(paths.MECHANISM_CHECK_RUN, **wildcards)
    return as_json(spec)


def check_training_data(wildcards):
    return data_file(config["training_data"])


def check_run_outputs(wildcards):
    """The checking runs of the cells aggregate_mechanism flagged (known once that checkpoint ran)."""
    flagged = checkpoints.aggregate_mechanism.get().output.flagged
    with open(flagged) as fh:
        cells = json.load(fh)
    chk = config["audit"]["mechanism"]["check"]
    return [
        paths.results(paths.MECHANISM_CHECK_METRICS, model=m, cell=c["cell"], arm=arm, seed=s)
        for m, chosen in cells.items()
        for c in chosen
        for arm in cfgmod.MECHANISM_ARMS
        for s in chk["seeds"]
    ]


def mechanism_outputs():
    """The map's aggregate outputs (and the checks', when enabled); empty when the map is off."""
    if not MECHANISM_MODELS:
        return []
    out = [paths.results(v) for v in paths.MECHANISM.values()]
    if config["audit"]["mechanism"]["check"]["enabled"]:
        out += [paths.results(v) for v in paths.MECHANISM_CHECKS.values()]
    return out


def audit_outputs():
    audit = config["audit"]
    out = []
    if audit["contamination"]["enabled"]:
        out += [paths.results(paths.CONTAMINATION_SUMMARY, model=m) for m in config["models"]]
    if audit["baselines"]["enabled"]:
        out += [paths.results(paths.BASELINES_SUMMARY, model=m) for m in config["models"]]
    out += [paths.results(paths.CLIP_PROBE, model=m) for m in cfgmod.probe_models(config)]
    return out


def base_evaluations():
    return [paths.results(paths.EVAL_BASE_SUMMARY, model=m) for m in config["models"]]


def run_evaluations():
    return [paths.results(paths.EVAL_RUN_SUMMARY, **r.wildcards) for r in RUNS]


def run_outputs(pattern):
    """``pattern`` (a paths.* run pattern) for every run of the grid."""
    return [paths.results(pattern, **r.wildcards) for r in RUNS]


def get_final_outputs():
    outputs = base_evaluations() + run_evaluations()
    outputs += [
        paths.results(paths.ORGANISM_PROBE, model=m)
        for m, spec in config["models"].items()
        if spec.get("organism")
    ]
    outputs += audit_outputs()
    outputs += mechanism_outputs()
    outputs += [
        paths.results(paths.AGGREGATE[k]) for k in ("summary", "metrics", "dvc_plot")
    ]
    outputs += [paths.results(paths.DVC_METRICS, model=m) for m in config["models"]]
    return outputs
