"""SLURM: profiles/slurm and the Snakemake SLURM executor against a real scheduler.

tests/slurm/cluster.sh brings up a one-node cluster on this machine (munged,
MariaDB + slurmdbd for `sacct`, slurmctld, slurmd; started by hand, no systemd)
for the session and stops exactly the daemons it started afterwards. The jobs
run on this machine, so they inherit this Python environment (`sbatch
--export=ALL`) and find the `spurious` CLI like a local run does.

Skipped only when the cluster cannot be built here: not root, or the SLURM
packages missing (.ci/setup-system.sh installs them). The profile checks need
no cluster, only the executor plugin (pyproject.toml's `slurm` extra).
"""

from __future__ import annotations

import importlib.machinery
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_SH = ROOT / "tests/slurm/cluster.sh"
PROFILE = ROOT / "profiles/slurm"
LOCAL_PROFILE = ROOT / "tests/slurm/local"
# Poll SLURM every second: the plugin's defaults (first check after 40 s, then
# +10 s per idle check) would make each toy job take a minute.
FAST_POLLING = ["--slurm-init-seconds-before-status-checks", "1", "--seconds-between-status-checks", "1"]
# Each snakemake call gets this long, then SIGINT: the plugin polls a failing
# status command forever, and SIGTERM only makes it wait for running jobs.
SNAKEMAKE_TIMEOUT = 420


def snakemake_cmd(*args: str, timeout: int = SNAKEMAKE_TIMEOUT) -> list[str]:
    return [
        "timeout",
        "-s",
        "INT",
        "-k",
        "30",
        str(timeout),
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(ROOT / "Snakefile"),
        *args,
    ]


# Where `make` installs the SLURM executor plugins (pyproject.toml's `slurm` extra): beside the
# venv, off its import path, so that no other snakemake call imports them (see the extra).
SLURM_PLUGINS = Path(os.environ.get("SPURIOUS_SLURM_PLUGINS", Path(sys.prefix) / "slurm-plugins"))


def plugin_dir() -> Path | None:
    """Where the SLURM executor plugins are: None when installed, else :data:`SLURM_PLUGINS`.

    Skips the calling test where they are in neither place.
    """
    # on sys.path, as a subprocess would see it (find_spec would also accept an earlier import)
    if importlib.machinery.PathFinder.find_spec("snakemake_executor_plugin_slurm") is not None:
        return None
    if not (SLURM_PLUGINS / "snakemake_executor_plugin_slurm").is_dir():
        pytest.skip(
            f"the SLURM executor plugin is not installed: `make` puts it in {SLURM_PLUGINS} "
            "(or set SPURIOUS_SLURM_PLUGINS, or pip install -e '.[slurm]')"
        )
    return SLURM_PLUGINS


def plugin_env() -> dict[str, str]:
    """This environment, with the SLURM executor plugins importable by snakemake and its jobs.

    SLURM jobs inherit the environment (`sbatch --export=ALL`), so they find the jobstep plugin too.
    """
    where = plugin_dir()
    if where is None:
        return dict(os.environ)
    rest = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(where), *([rest] if rest else [])])}


def run(
    cmd: list[str], cwd: Path = ROOT, timeout: int = SNAKEMAKE_TIMEOUT + 60
) -> subprocess.CompletedProcess:
    """Run a snakemake command that needs the SLURM executor plugin."""
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=plugin_env())


def dry_run_resources(*args: str) -> dict[str, dict[str, str]]:
    """{rule: resources of its first job} from a dry run's job listing."""
    res = run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "-n", *args])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    found: dict[str, dict[str, str]] = {}
    rule = None
    for line in res.stdout.splitlines():
        if m := re.match(r"^(?:local)?rule (\w+):$", line.strip()):
            rule = m.group(1)
        elif rule and line.strip().startswith("resources:") and rule not in found:
            pairs = (kv.split("=", 1) for kv in line.strip()[len("resources:") :].split(", "))
            found[rule] = {k.strip(): v.strip() for k, v in pairs}
    return found


# ----------------------------------------------------------------- the profile --


def test_profile_keys_are_commented_and_use_plugin_resources():
    """Every top-level and default-resources key has a comment above it saying why."""
    lines = (PROFILE / "profile.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        key = re.match(r"^( {0,2})([a-z][\w-]*):", line)
        if not key:
            continue
        above = next((x for x in reversed(lines[:i]) if x.strip()), "")
        if key.group(1) == "" or (key.group(1) == "  " and lines_block(lines, i) == "default-resources"):
            assert above.strip().startswith("#"), f"no comment above {line.strip()!r}"
    prof = yaml.safe_load((PROFILE / "profile.yaml").read_text())
    assert prof["executor"] == "slurm"
    # cpus_per_task would override the GPU rules' cpus_per_gpu (the plugin drops the latter)
    assert "cpus_per_task" not in prof["default-resources"]
    for key in ("slurm_partition", "slurm_account", "runtime", "mem_mb"):
        assert key in prof["default-resources"], key
    # conda is the user's choice on the command line, not the profile's
    assert not {"use-conda", "sdm", "software-deployment-method"} & set(prof)


def lines_block(lines: list[str], i: int) -> str:
    """The top-level key whose block line i belongs to."""
    for line in reversed(lines[:i]):
        if m := re.match(r"^([a-z][\w-]*):", line):
            return m.group(1)
    return ""


def test_slurm_extra_holds_nothing_the_plugin_rejects(monkeypatch):
    if (where := plugin_dir()) is not None:
        monkeypatch.syspath_prepend(str(where))
    from snakemake_executor_plugin_slurm.validation import get_forbidden_slurm_options

    prof = yaml.safe_load((PROFILE / "profile.yaml").read_text())
    extras = [prof["default-resources"].get("slurm_extra")]
    extras += [r.get("slurm_extra") for r in prof["set-resources"].values()]
    for extra in filter(None, extras):
        for pattern, option in get_forbidden_slurm_options().items():
            assert not re.search(pattern, extra), f"slurm_extra {extra!r} sets --{option}"


@pytest.mark.slow
def test_profile_requests_a_gpu_node_for_training_on_the_paper_grid():
    """What the plugin will submit for the paper's grid (a dry run needs no cluster).

    The exact `snakemake --profile profiles/slurm` a user runs: the workflow
    profile profiles/default is applied too, and must not cap the `gpu`
    resource (a global `resources: gpu=N` silently scales every job down to N).
    """
    res = dry_run_resources("--profile", str(PROFILE), "--configfile", str(ROOT / "config/paper.yaml"))
    train = res["train_grpo"]
    assert train["gpu"] == "8", f"train_grpo would get --gpus={train['gpu']}, not a node of 8 GPUs: {train}"
    assert train["cpus_per_gpu"] == "8" and "cpus_per_task" not in train
    assert train["slurm_partition"] == "YOUR_GPU_PARTITION"
    for rule in ("evaluate_base", "evaluate_run", "label_majority_vote"):
        assert res[rule]["gpu"] == "1", (rule, res[rule])
        assert res[rule]["slurm_partition"] == "YOUR_GPU_PARTITION"
    assert "gpu" not in res["prepare_dataset"] or res["prepare_dataset"]["gpu"] == "0"
    assert res["prepare_dataset"]["slurm_partition"] == "YOUR_CPU_PARTITION"
    assert res["prepare_dataset"]["slurm_account"] == "YOUR_ACCOUNT"


# ----------------------------------------------------------------- the cluster --


def _cluster_skip_reason() -> str | None:
    if sys.platform != "linux" or os.geteuid() != 0:
        return "needs root on Linux: tests/slurm/cluster.sh installs Debian packages and starts SLURM daemons"
    packages = subprocess.run(
        ["bash", str(CLUSTER_SH), "packages"], capture_output=True, text=True
    ).stdout.split()
    missing = [
        p
        for p in packages
        if subprocess.run(["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True).stdout
        != "install ok installed"
    ]
    if missing:  # tests never install system packages (cluster.sh up would): .ci/setup-system.sh does
        return f"SLURM packages missing ({', '.join(missing)}): run .ci/setup-system.sh as root"
    return None


@pytest.fixture(scope="session")
def slurm_cluster():
    """A running one-node cluster; stopped at the end if this session started it."""
    if reason := _cluster_skip_reason():
        pytest.skip(reason)
    was_up = subprocess.run(["bash", str(CLUSTER_SH), "status"], capture_output=True).returncode == 0
    up = subprocess.run(["bash", str(CLUSTER_SH), "up"], capture_output=True, text=True, timeout=900)
    if up.returncode != 0:
        pytest.fail(f"tests/slurm/cluster.sh up failed:\n{up.stdout}\n{up.stderr}")
    try:
        yield
    finally:
        if not was_up:
            down = subprocess.run(
                ["bash", str(CLUSTER_SH), "down"], capture_output=True, text=True, timeout=300
            )
            assert down.returncode == 0, down.stdout + down.stderr


@pytest.mark.slow  # starts SLURM daemons (once per session) and submits jobs
def test_cluster_up_again_reuses_the_running_daemons(slurm_cluster):
    up = subprocess.run(["bash", str(CLUSTER_SH), "up"], capture_output=True, text=True, timeout=120)
    assert up.returncode == 0, up.stderr
    assert "slurmctld already running" in up.stderr and "started" not in up.stderr, up.stderr
    status = subprocess.run(["bash", str(CLUSTER_SH), "status"], capture_output=True, text=True)
    assert status.returncode == 0 and "debug" in status.stdout, status.stdout


def toy_config(tmp_path: Path, **datasets: dict) -> Path:
    """The default study cut to one shipped organism, one reward and one GRPO step."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    name, model = next((n, m) for n, m in cfg["models"].items() if (ROOT / m["path"]).is_dir())
    cfg["models"] = {name: {**model, "path": str(ROOT / model["path"])}}
    cfg["rewards"] = {"ground_truth": cfg["rewards"]["ground_truth"]}
    cfg["seeds"] = [1]
    cfg["datasets"]["train"]["n"] = 16
    cfg["datasets"]["arith_test"]["n"] = 8
    cfg["datasets"].update(datasets)
    cfg["audit"]["mechanism"]["enabled"] = False  # its updates per rollout need config.yaml's 128-sample rollout
    cfg["grpo"].update(
        steps=1,
        save_every=1,
        prompts_per_rollout=2,
        group_size=4,
        mini_batch=4,
        micro_batch=4,
        max_new_tokens=16,
    )
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def on_slurm(tmp_path: Path, *targets: str, configfile: Path) -> subprocess.CompletedProcess:
    # targets before --configfile, which takes several values
    return run(
        snakemake_cmd(
            *targets,
            "--profile",
            str(PROFILE),
            "--profile",
            str(LOCAL_PROFILE),
            *FAST_POLLING,
            "--directory",
            str(tmp_path),
            "--configfile",
            str(configfile),
        )
    )


def slurm_job_states(output: str) -> dict[str, str]:
    """{SLURM job id: final state from sacct} for every job this run submitted."""
    ids = re.findall(r"submitted with SLURM jobid (\d+)", output)
    assert ids, "no job was submitted through sbatch:\n" + output[-3000:]
    res = subprocess.run(
        ["sacct", "-X", "--parsable2", "--noheader", "--format=JobIdRaw,State", "-j", ",".join(ids)],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(line.split("|", 1) for line in res.stdout.split())


@pytest.mark.slow  # starts SLURM daemons (once per session) and submits jobs
def test_toy_data_and_training_run_as_slurm_jobs(slurm_cluster, tmp_path):
    conf = toy_config(tmp_path)
    model = next(iter(yaml.safe_load(conf.read_text())["models"]))
    audit = f"results/audit/contamination/{model}/summary.json"  # an audit rule goes through the cluster too
    res = on_slurm(tmp_path, "prepare_data", "train_all", audit, configfile=conf)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    # every dataset + 1 GRPO run + 1 contamination audit, each its own sbatch job, each COMPLETED in slurmdbd
    datasets = list(yaml.safe_load(conf.read_text())["datasets"])
    states = slurm_job_states(out)
    assert len(states) == len(datasets) + 2 and set(states.values()) == {"COMPLETED"}, states
    assert (tmp_path / audit).is_file() and "rule audit_contamination" in out
    for name in datasets:
        assert (tmp_path / f"results/data/{name}.jsonl").read_text().strip(), name
    run_dir = tmp_path / f"results/train/{model}/ground_truth/clip/seed1"
    assert (run_dir / "checkpoints/step_1/model.safetensors").is_file()
    # step 0 (the base model) and the one GRPO step
    steps = [yaml.safe_load(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [0, 1]


@pytest.mark.slow  # starts SLURM daemons (once per session) and submits jobs
def test_failing_job_is_reported_failed_and_leaves_no_output(slurm_cluster, tmp_path):
    # an existing but empty local data file: `spurious prepare-data` exits non-zero
    (tmp_path / "empty.jsonl").touch()
    broken = {
        "kind": "hub",
        "path": "empty.jsonl",
        "split": "test",
        "fields": {"prompt": "problem", "answer": "answer", "id": None},
    }
    conf = toy_config(tmp_path, broken=broken)
    res = on_slurm(tmp_path, "results/data/broken.jsonl", configfile=conf)
    out = res.stdout + res.stderr
    assert res.returncode != 0, out[-6000:]
    assert "failed" in out and "SLURM status is: 'FAILED'" in out, out[-6000:]
    assert set(slurm_job_states(out).values()) == {"FAILED"}
    assert not (tmp_path / "results/data/broken.jsonl").exists()
    assert not list((tmp_path / "results/data").glob(".broken*")), "a half-written file was left behind"
    # the job's own log names the cause, and the plugin keeps the failed job's SLURM log
    assert "file is empty" in (tmp_path / "logs/prepare_dataset/broken.log").read_text()
    assert list((tmp_path / ".snakemake/slurm_logs/rule_prepare_dataset").rglob("*.log"))


def test_every_rule_of_the_paper_grid_has_its_resources():
    """Each job rule the paper config plans gets a partition, memory and time from profiles/slurm, and a
    GPU where it runs on one (the audit rules included); latency-wait is the profile's, not overridden."""
    res = dry_run_resources("--profile", str(PROFILE), "--configfile", str(ROOT / "config/paper.yaml"))
    prof = yaml.safe_load((PROFILE / "profile.yaml").read_text())
    jobs = set(res) - {"all"}
    assert {"audit_contamination", "evaluate_baselines", "probe_clip_bias", "train_grpo"} <= jobs, jobs
    # the mechanism map's cells too; its checkpoint (printed as such, not as a rule) and its checking runs
    # (planned once the checkpoint ran) have their resources as well
    assert {"probe_mechanism", "aggregate_mechanism_checks"} <= jobs, jobs
    assert {"aggregate_mechanism", "train_mechanism_check"} <= set(prof["set-resources"])
    gpu_rules = {"train_grpo", "evaluate_base", "evaluate_run", "label_majority_vote", "audit_contamination",
                 "evaluate_baselines", "probe_clip_bias", "probe_mechanism"}
    for rule in jobs:
        assert rule in prof["set-resources"], f"profiles/slurm has no resources for {rule}"
        r = res[rule]
        for key in ("slurm_partition", "runtime", "mem_mb"):
            assert key in r, (rule, key, r)
        want = "YOUR_GPU_PARTITION" if rule in gpu_rules else "YOUR_CPU_PARTITION"
        assert r["slurm_partition"] == want, (rule, r)
        if rule in gpu_rules:
            assert int(r["gpu"]) >= 1, (rule, r)
    default = yaml.safe_load((ROOT / "profiles/default/profile.yaml").read_text())
    assert "latency-wait" not in default and prof["latency-wait"] == 60
