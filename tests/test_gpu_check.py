"""bench/gpu_check.py at its tiny CPU size, and bench/gpu_wheels.sh's wheel list (nothing is downloaded).

The check itself is meant for a lent GPU machine (BENCHMARKS.md); here the same code runs a
tiny Qwen2 and the toy organism on the CPU, and the test reads its JSON: every figure there,
the plan's estimates equal to what plan.py computes for that shape, and the ratios computed
from them. The wheel list is checked against this venv (the same pins, importable together)
and for completeness: every requirement of a listed wheel is another listed wheel or a
package the lent image provides (gpu_check.IMAGE_PROVIDES).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load_gpu_check():
    spec = importlib.util.spec_from_file_location("gpu_check", ROOT / "bench" / "gpu_check.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = mod
    spec.loader.exec_module(mod)
    return mod


def _wheel_list() -> list[tuple[str, str]]:
    out = subprocess.run(["bash", str(ROOT / "bench" / "gpu_wheels.sh"), "--list"], capture_output=True, text=True,
                         check=True).stdout
    pairs = [tuple(line.split("==")) for line in out.split()]
    assert pairs and all(len(p) == 2 for p in pairs), out
    return pairs


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_wheel_list_matches_this_venv_and_imports_together() -> None:
    """Each listed wheel is the version this venv runs with, and all import in one interpreter with TRL's trainer."""
    from importlib.metadata import version

    pairs = _wheel_list()
    names = {_norm(n) for n, _ in pairs}
    assert {"trl", "datasets", "math-verify", "latex2sympy2-extended", "antlr4-python3-runtime", "jsonschema"} <= names
    assert dict(pairs)["trl"] == "1.16.0" and dict(pairs)["math-verify"] == "0.9.0"
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"trl==1.16.0"' in pyproject  # the wheel is the version the project pins
    for name, ver in pairs:
        assert version(name) == ver, f"{name}: the wheel list has {ver}, this venv {version(name)}"
    code = ("import trl, datasets, dill, multiprocess, math_verify, latex2sympy2_extended, antlr4, jsonschema, "
            "jsonschema_specifications, referencing, rpds\n"
            "from trl import GRPOConfig, GRPOTrainer\n"
            "from math_verify import parse, verify\n"
            "assert verify(parse('$\\\\frac{1}{2}$'), parse('$0.5$'))\n"
            "import spurious_rewards.training.trl_backend, spurious_rewards.audit.clip_probe\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow")}
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=300)


def test_wheel_list_is_complete_for_the_image() -> None:
    """Every requirement of a listed wheel (Python 3.12, no extras) is listed too or provided by the image."""
    from importlib.metadata import distribution

    from packaging.requirements import Requirement

    gc = _load_gpu_check()
    pairs = _wheel_list()
    listed = {_norm(n) for n, _ in pairs}
    provided = {_norm(n) for n in gc.IMAGE_PROVIDES}
    env = {"python_version": "3.12", "python_full_version": "3.12.3", "sys_platform": "linux",
           "platform_system": "Linux", "platform_machine": "x86_64", "implementation_name": "cpython",
           "platform_python_implementation": "CPython", "os_name": "posix", "extra": ""}
    missing = []
    for name, _ in pairs:
        for line in distribution(name).requires or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate(env):
                continue
            if _norm(req.name) not in listed | provided:
                missing.append(f"{name} needs {req}")
    assert not missing, missing
    assert not listed & {_norm(n) for n in ("torch", "transformers", "accelerate")}  # the image's own are used


@pytest.mark.slow
def test_tiny_cpu_run_writes_every_figure(tmp_path: Path) -> None:
    """The whole check at --size tiny on the CPU: every section runs, every figure and ratio is there."""
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--size", "tiny",
                           "--out", str(out), "--work", str(tmp_path / "work")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rep = json.loads(out.read_text())
    assert rep["bootstrap"]["missing_in_image"] == []  # this venv has TRL & co.: no wheel was installed
    assert rep["versions"]["trl"] == "1.16.0"

    def positive(x) -> bool:
        return isinstance(x, (int, float)) and math.isfinite(x) and x > 0

    org = rep["organism"]
    assert "error" not in org, org
    steps = org["train"]["steps"]
    assert [s["step"] for s in steps] == [1]
    for s in steps:
        assert positive(s["step_s"]) and positive(s["rollout_tokens_per_s"]) and s["reward_mean"] is not None
    assert "step_1" in org["train"]["checkpoints"] and positive(org["train"]["peak_bytes"])
    assert org["probe"]["draws"] == 2 and org["probe"]["variants"] == ["clip", "no_clip", "one_update"]
    assert positive(org["probe"]["wall_s"]) and positive(org["probe"]["peak_bytes"])

    shape = rep["shape"]
    for part in ("model", "trl_step", "baseline", "probe_draw"):
        assert part in shape and "error" not in shape[part], shape.get(part)
    gc = _load_gpu_check()
    tiny = gc.SIZES["tiny"]
    assert shape["model"]["config"]["vocab_size"] == tiny["model"]["vocab_size"]
    t = shape["trl_step"]
    assert t["sequences"] == tiny["prompts"] * tiny["group"] and t["micro_batches"] == t["sequences"] // tiny["micro"]
    for k in ("wall_s", "step_s", "generate_s", "update_s", "generate_tokens_per_s", "update_tokens_per_s",
              "peak_bytes", "mean_response_tokens"):
        assert positive(t[k]), (k, t[k])
    assert t["phase_peak_bytes"] is None  # no phase split on the CPU
    assert len(t["p_code_s"]) == 2  # before training and after the step
    b = shape["baseline"]
    assert b["generate"]["sequences"] == t["sequences"] and b["generate"]["new_tokens"] == tiny["response"]
    for k in ("s", "tokens_per_s", "peak_bytes"):
        assert positive(b["generate"][k])
    for k in ("s_per_micro_batch", "tokens_per_s", "peak_bytes"):
        assert positive(b["update"][k])
    p = shape["probe_draw"]
    assert p["sequences"] == tiny["probe_prompts"] * tiny["probe_group"] and p["updates"] == 2
    for k in ("generate_s", "generate_peak_bytes", "generate_tokens_per_s", "step_s", "step_peak_bytes"):
        assert positive(p[k])

    # the estimates are plan.py's own for this shape, and the ratios are estimate / measured
    from spurious_rewards import plan

    job = json.loads((tmp_path / "work" / "shape.job.json").read_text())
    arch = plan.arch_from_hf_config({**shape["model"]["config"], "dtype": "bfloat16"})
    assert rep["plan"]["arch_params"] == arch.params == shape["model"]["params"]
    assert rep["plan"]["trl_step"]["peak"] == plan.estimate_train(job["cfg"], gc.SHAPE_MODEL, arch)[0].peak.total
    probe_est = plan.estimate_probe(job["probe_cfg"], gc.SHAPE_MODEL, arch)
    gen_est = next(ph.total for ph in probe_est.phases if ph.name.startswith("rollout generate"))
    r = rep["ratios"]
    assert r["trl_step_peak_fp32_plan"] == pytest.approx(rep["plan"]["trl_step"]["peak"] / t["peak_bytes"])
    assert r["trl_step_peak_bf16_terms"] == pytest.approx(rep["plan"]["trl_step_bf16_terms"]["peak"] / t["peak_bytes"])
    assert r["probe_generate"] == pytest.approx(gen_est / p["generate_peak_bytes"])
    assert positive(r["probe_step"])
    for key in ("rollout generate", "update (micro-batch)", "p_code probe"):  # CUDA-only phase ratios: present, None
        assert r[f"trl_{key}_fp32_plan"] is None and r[f"trl_{key}_bf16_terms"] is None
    assert "TRL step: whole" in proc.stdout and "probe draw: grpo_step" in proc.stdout


def test_bad_section_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--size", "tiny",
                           "--out", str(tmp_path / "x.json"), "--sections", "organism,nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "nope not allowed; allowed values: organism, shape" in proc.stderr


def test_run_all_keeps_the_hand_written_tail(tmp_path: Path) -> None:
    """bench/run_all.py rewrites BENCHMARKS.md but keeps what follows its marker (the GPU check section)."""
    spec = importlib.util.spec_from_file_location("run_all", ROOT / "bench" / "run_all.py")
    ra = importlib.util.module_from_spec(spec)
    sys.modules["run_all"] = ra
    spec.loader.exec_module(ra)
    md = tmp_path / "B.md"
    md.write_text(f"# old table\n\n{ra.KEEP_MARKER}\n\n## GPU check\n\nkept text\n")
    ra.write_markdown([], ra.machine(), {}, False, md)
    text = md.read_text()
    assert "# old table" not in text and text.count(ra.KEEP_MARKER) == 1 and "## GPU check\n\nkept text" in text
    assert ra.KEEP_MARKER in (ROOT / "BENCHMARKS.md").read_text()


def _fake_wheel(folder: Path, name: str) -> Path:
    """A minimal pure wheel holding module ``name`` (written by hand: no build tools, no index)."""
    import zipfile

    folder.mkdir(parents=True, exist_ok=True)
    whl = folder / f"{name}-1.0-py3-none-any.whl"
    di = f"{name}-1.0.dist-info"
    files = {f"{name}/__init__.py": "VALUE = 42\n",
             f"{di}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
             f"{di}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{di}/RECORD"] = "".join(f"{p},,\n" for p in files) + f"{di}/RECORD,,\n"
    with zipfile.ZipFile(whl, "w") as z:
        for p, text in files.items():
            z.writestr(p, text)
    return whl


def test_bootstrap_installs_carried_wheels_when_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the lent machine does first: missing modules come from the carried wheels, offline, into a folder."""
    gc = _load_gpu_check()
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setenv("PYTHONPATH", "")
    name = "gpu_check_fake_dep"
    _fake_wheel(tmp_path / "wheels", name)
    info = gc.bootstrap(tmp_path / "wheels", target=tmp_path / "site", needed=(name,))
    assert info["missing_in_image"] == [name] and info["wheels_installed"] == [f"{name}-1.0-py3-none-any.whl"]
    assert importlib.import_module(name).VALUE == 42
    assert os.environ["PYTHONPATH"].split(os.pathsep)[:2] == [str(tmp_path / "site"), str(ROOT / "workflow")]
    sys.modules.pop(name, None)
    with pytest.raises(SystemExit, match="no wheels in"):
        gc.bootstrap(tmp_path / "empty", target=tmp_path / "site2", needed=("gpu_check_absent_dep",))


def test_paper_size_on_cpu_is_refused(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--device", "cpu", "--size", "paper",
                           "--out", str(tmp_path / "x.json")], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "--size paper needs --device cuda" in proc.stderr
