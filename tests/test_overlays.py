"""Study configs as overlays: `extends:` in config.load, `spurious check-config` and the Snakefile."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from conftest import ROOT, job_counts, run_snakemake

from spurious_rewards import config as cfgmod

FULL = ROOT / "config" / "organism-full.yaml"
PAPER = ROOT / "config" / "paper.yaml"


def test_organism_full_is_config_yaml_with_five_values_changed():
    """The overlay says only what differs; resolved, it is the 200-line copy it replaced."""
    own = yaml.safe_load(FULL.read_text())
    assert own == {
        "extends": "../config.yaml",
        "seeds": [1, 2, 3],
        "grpo": {"steps": 60},
        "rewards": {"no_python": {"models": None}},
        "audit": {"clip_probe": {"models": None, "draws": 200}},
    }
    want = yaml.safe_load((ROOT / "config.yaml").read_text())
    want["seeds"] = [1, 2, 3]
    want["grpo"]["steps"] = 60
    want["rewards"]["no_python"]["models"] = None  # every organism, toy-nocode included
    want["audit"]["clip_probe"]["models"] = None
    want["audit"]["clip_probe"]["draws"] = 200
    got = cfgmod.read(FULL)
    assert got == want
    # key order too (the first benchmark is the main one; tables follow config order)
    assert list(got) == list(want) and list(got["grpo"]) == list(want["grpo"])
    assert cfgmod.extends_chain(FULL) == [FULL, ROOT / "config.yaml"]
    assert cfgmod.load(FULL)["grpo"]["steps"] == 60


def test_paper_inherits_nothing():
    """config/paper.yaml has no `extends:`, so none of the toy models or datasets reach it."""
    raw = yaml.safe_load(PAPER.read_text())
    assert "extends" not in raw
    assert cfgmod.read(PAPER) == raw
    assert not [m for m in cfgmod.load(PAPER)["models"] if m.startswith("toy-")]


def test_merge_rules_and_chains(tmp_path):
    """Mappings merge key by key, lists and scalars replace, through a chain of relative paths."""
    (tmp_path / "a").mkdir()
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(
        {"seeds": [1, 2], "grpo": {"lr": 1e-4, "steps": 10}, "study": "base", "audit": {"clean": ["x", "y"]}}))
    (tmp_path / "a" / "mid.yaml").write_text("extends: ../base.yaml\ngrpo: {steps: 20}\nseeds: [3]\n")
    (tmp_path / "a" / "top.yaml").write_text("extends: mid.yaml\nstudy: top\naudit: {clean: []}\n")
    assert cfgmod.read(tmp_path / "a" / "top.yaml") == {
        "seeds": [3], "grpo": {"lr": 1e-4, "steps": 20}, "study": "top", "audit": {"clean": []}}
    # several files then --config values, as the Snakefile does
    (tmp_path / "more.yaml").write_text("grpo: {lr: 3.0e-4}\n")
    got = cfgmod.resolve_files([tmp_path / "a" / "top.yaml", tmp_path / "more.yaml"], {"grpo": {"beta": 0.1}})
    assert got["grpo"] == {"lr": 3e-4, "steps": 20, "beta": 0.1}


def test_extends_errors_name_the_files(tmp_path):
    (tmp_path / "x.yaml").write_text("extends: y.yaml\n")
    (tmp_path / "y.yaml").write_text("extends: x.yaml\n")
    with pytest.raises(cfgmod.ConfigError, match=r"loops: .*x\.yaml -> .*y\.yaml -> .*x\.yaml"):
        cfgmod.read(tmp_path / "x.yaml")
    (tmp_path / "z.yaml").write_text("extends: nowhere.yaml\n")
    with pytest.raises(cfgmod.ConfigError, match=r"nowhere\.yaml: no such config file \(the `extends:` of .*z\.yaml\)"):
        cfgmod.read(tmp_path / "z.yaml")
    (tmp_path / "w.yaml").write_text("extends: [a.yaml]\n")
    with pytest.raises(cfgmod.ConfigError, match=r"w\.yaml: extends: must be a file path"):
        cfgmod.read(tmp_path / "w.yaml")
    # a config whose extends was never resolved is not validated as if it had none
    with pytest.raises(cfgmod.ConfigError, match="extends: 'config.yaml' is not resolved"):
        cfgmod.validate({**yaml.safe_load((ROOT / "config.yaml").read_text()), "extends": "config.yaml"})


def test_check_config_resolves_and_writes_the_study(tmp_path):
    out = tmp_path / "study.yaml"
    res = subprocess.run([sys.executable, "-m", "spurious_rewards.cli", "check-config", str(FULL), "--out", str(out)],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    assert "63 training runs" in res.stdout and res.stdout.rstrip().endswith(f"extends {ROOT / 'config.yaml'}")
    written = yaml.safe_load(out.read_text())
    assert written == cfgmod.load(FULL)  # validated: defaults filled in
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: missing.yaml\n")
    res = subprocess.run([sys.executable, "-m", "spurious_rewards.cli", "check-config", str(bad)],
                         capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2 and "missing.yaml: no such config file" in res.stderr


def test_snakemake_plans_the_overlay_like_the_full_copy(tmp_path):
    """`snakemake -n --configfile config/organism-full.yaml` plans the same jobs as the resolved copy."""
    wd = tmp_path / "wd"
    wd.mkdir()
    (wd / "workflow").symlink_to(ROOT / "workflow")
    copy = tmp_path / "full-copy.yaml"
    copy.write_text(yaml.safe_dump(cfgmod.read(FULL), sort_keys=False))
    counts = {}
    for name, cf in (("overlay", FULL), ("copy", copy)):
        res = run_snakemake(wd, "-n", "--quiet", "rules", configfile=cf)
        assert res.returncode == 0, res.stderr[-3000:]
        counts[name] = job_counts(res.stdout)
    assert counts["overlay"] == counts["copy"]
    assert counts["overlay"]["train_grpo"] == counts["overlay"]["evaluate_run"] == 21 * 3
    assert counts["overlay"]["probe_clip_bias"] == 3


def test_replace_sets_a_mapping_whole(tmp_path):
    """`replace: [models]`: the overlay's models instead of the base's, everything else merged."""
    (tmp_path / "base.yaml").write_text(yaml.safe_dump(
        {"models": {"a": {"path": "x"}, "b": {"path": "y"}}, "grpo": {"lr": 1e-4, "steps": 10}}))
    (tmp_path / "one.yaml").write_text("extends: base.yaml\nreplace: [models]\nmodels: {b: {path: z}}\n"
                                       "grpo: {steps: 20}\n")
    assert cfgmod.read(tmp_path / "one.yaml") == {"models": {"b": {"path": "z"}}, "grpo": {"lr": 1e-4, "steps": 20}}
    (tmp_path / "bad.yaml").write_text("extends: base.yaml\nreplace: [datasets]\n")
    with pytest.raises(cfgmod.ConfigError, match=r"bad\.yaml: replace: 'datasets' is not a key this file sets"):
        cfgmod.read(tmp_path / "bad.yaml")


def test_paper_1gpu_runs_one_model_with_the_papers_settings():
    """config/paper-1gpu.yaml: the paper's study (rewards, benchmarks) with only the 1.5B math model."""
    cfg = cfgmod.load(ROOT / "config" / "paper-1gpu.yaml")
    paper = cfgmod.load(PAPER)
    assert list(cfg["models"]) == ["Qwen2.5-Math-1.5B"]
    assert cfg["rewards"] == paper["rewards"] and cfg["benchmarks"] == paper["benchmarks"]
    assert cfg["backend"] == "trl" and cfg["grpo"]["gpus"] == 1
