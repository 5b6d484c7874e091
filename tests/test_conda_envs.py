"""Conda environments (envs/*.yaml): valid specs, pins agreeing with pyproject.toml, opt-in only.

Rules reference these files through `conda:`; they are used only with
`--sdm conda` (`--use-conda`). Tests and CI run in the current environment, so
the one test that needs conda is skipped, with the reason, where conda >= 24.7.1
(what Snakemake 9 requires) is not installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

try:
    import tomllib  # Python >= 3.11
except ModuleNotFoundError:  # Python 3.10: tomlkit comes with dvc
    import tomlkit as tomllib

ROOT = Path(__file__).resolve().parents[1]
ENV_FILES = sorted((ROOT / "envs").glob("*.yaml"))
CONDA_MIN = (24, 7, 1)
# Pins an environment may hold at a different version than pyproject.toml, and why.
# Anything else pinned in both must agree, or the CPU tests would test other code
# than the environment runs.
ALLOWED_DIFFERENCES: dict[str, dict[str, str]] = {
    "train-openrlhf.yaml": {
        "transformers": "OpenRLHF 0.11.2 pins transformers==5.15.0 (see .ci/openrlhf-env.sh)",
        "tokenizers": "what transformers 5.15.0 resolves to",
    },
    "pipeline-gpu.yaml": {
        "transformers": "vLLM 0.32.0 (TRL's colocate rollouts) needs transformers < 5.20",
        "numpy": "vLLM 0.32.0's mistral_common needs numpy < 2.4",
    },
    "eval-vllm.yaml": {
        "transformers": "= train-openrlhf.yaml: rollouts and evaluation share one vLLM/tokenizer stack",
        "tokenizers": "what transformers 5.15.0 resolves to",
    },
}
PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(==?|>=|<=|~=|!=|<|>)?\s*([^\s;#,]*)")


def normalize(name: str) -> str:
    """PEP 503 names: conda and pip spell some packages with '_' or '.' where the other has '-'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_pin(spec: str) -> tuple[str, str | None]:
    """('name', 'version') of an exact pin (conda `=`/`==`, pip `==`), else ('name', None)."""
    m = PIN.match(spec)
    assert m, f"cannot parse requirement {spec!r}"
    name, _extras, op, version = m.groups()
    exact = op in ("=", "==") and version and not version.endswith("*")
    return normalize(name), version if exact else None


def pyproject_pins() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        specs += [s for s in extra if not s.startswith(project["name"])]
    pins = dict(parse_pin(s) for s in specs)
    return {k: v for k, v in pins.items() if v}


def makefile_torch_pin() -> str | None:
    """torch is not in pyproject.toml (its CPU wheel is installed first by the Makefile)."""
    m = re.search(r"pip install [^\n]*\btorch==([\w.+]+)", (ROOT / "Makefile").read_text())
    return m.group(1) if m else None


def env_pins(env: dict) -> tuple[dict[str, str], list[str]]:
    """({package: version} of every exact pin, [names of unpinned packages]) of a conda env spec."""
    pins: dict[str, str] = {}
    loose: list[str] = []
    for dep in env["dependencies"]:
        specs = dep["pip"] if isinstance(dep, dict) else [dep]
        for spec in specs:
            if spec.startswith("-"):  # pip options such as --extra-index-url
                continue
            name, version = parse_pin(spec)
            if name in ("pip", "python"):
                continue
            if version:
                pins[name] = version
            else:
                loose.append(name)
    return pins, loose


def test_there_is_a_pipeline_env():
    assert ROOT / "envs/pipeline.yaml" in ENV_FILES


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_is_a_pinned_conda_spec(path):
    env = yaml.safe_load(path.read_text())
    assert isinstance(env, dict), f"{path.name}: not a mapping"
    assert set(env) <= {"name", "channels", "dependencies", "variables", "prefix"}, set(env)
    assert env.get("channels"), f"{path.name}: give channels explicitly (conda-forge, nodefaults)"
    assert "defaults" not in env["channels"], (
        "the Anaconda defaults channel has license terms; use conda-forge"
    )
    deps = env["dependencies"]
    assert isinstance(deps, list) and deps
    for dep in deps:
        assert isinstance(dep, str) or (isinstance(dep, dict) and set(dep) == {"pip"}), dep
    python = next((d for d in deps if isinstance(d, str) and parse_pin(d)[0] == "python"), None)
    assert python and parse_pin(python)[1], f"{path.name}: pin python"
    # the package itself needs python >= requires-python
    floor = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["requires-python"]
    assert tuple(map(int, parse_pin(python)[1].split(".")[:2])) >= tuple(
        map(int, floor.removeprefix(">=").split(".")[:2])
    )
    if any(isinstance(d, dict) for d in deps):
        assert any(isinstance(d, str) and parse_pin(d)[0] == "pip" for d in deps), "pip: entries need pip"


@pytest.mark.parametrize("path", ENV_FILES, ids=lambda p: p.name)
def test_env_pins_agree_with_pyproject(path):
    pins, loose = env_pins(yaml.safe_load(path.read_text()))
    ours = pyproject_pins()
    if torch := makefile_torch_pin():
        ours["torch"] = torch
    # what we pin must be pinned there too (build helpers like wheel may float)
    floating = sorted(set(loose) & set(ours))
    assert not floating, f"{path.name}: {floating} unpinned, but pinned in pyproject.toml"
    allowed = ALLOWED_DIFFERENCES.get(path.name, {})
    differ = {
        name: (version, ours[name])
        for name, version in pins.items()
        if name in ours and version != ours[name] and name not in allowed
    }
    assert not differ, f"{path.name} vs pyproject.toml/Makefile (env, ours): {differ}"


def test_pipeline_env_covers_the_cpu_install():
    """envs/pipeline.yaml runs every CPU rule: it must hold every runtime pin of pyproject.toml."""
    pins, _ = env_pins(yaml.safe_load((ROOT / "envs/pipeline.yaml").read_text()))
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = [parse_pin(s)[0] for s in project["dependencies"] + project["optional-dependencies"]["train"]]
    missing = [name for name in runtime if name not in pins]
    assert not missing, f"envs/pipeline.yaml lacks {missing}"


def test_no_profile_turns_conda_on():
    """Conda is opt-in on the command line: a profile with it would make every run, and
    every test, fail without conda ('Error running conda info')."""
    for profile in sorted((ROOT / "profiles").glob("*/*.yaml")):
        prof = yaml.safe_load(profile.read_text()) or {}
        assert not prof.get("use-conda"), profile
        for key in ("sdm", "software-deployment-method", "deployment-method"):
            value = prof.get(key) or []
            assert "conda" not in ([value] if isinstance(value, str) else value), (profile, key)


def conda_version() -> tuple[int, ...] | None:
    conda = shutil.which("conda")
    if not conda:
        return None
    out = subprocess.run([conda, "--version"], capture_output=True, text=True).stdout
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", out)
    return tuple(map(int, m.groups())) if m else None


def test_workflow_plans_with_conda(tmp_path):
    """With conda, `--sdm conda` resolves every rule's env file (a dry run: nothing is installed)."""
    version = conda_version()
    if version is None or version < CONDA_MIN:
        found = "not installed" if version is None else ".".join(map(str, version))
        pytest.skip(f"needs conda >= {'.'.join(map(str, CONDA_MIN))} on PATH (found: {found})")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "snakemake",
            "--snakefile",
            str(ROOT / "Snakefile"),
            "-n",
            "--sdm",
            "conda",
            "--directory",
            str(tmp_path),
            "--configfile",
            str(ROOT / "config.yaml"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "conda" in out and "train_grpo" in out
