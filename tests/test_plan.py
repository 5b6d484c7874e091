"""The memory and cost plan (spurious_rewards.plan): estimates vs measured peaks, planted
infeasible configs, and ``spurious plan`` on the paper's config.

The measured peaks come from bench/bench_plan_memory.py (torch's profiler, exact
allocator events; its docstring says why not RSS) on small random Qwen2 models run
through the real code paths; the tolerance is its TOLERANCE (30%).
"""

from __future__ import annotations

import copy
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from spurious_rewards import cli, config, plan
from spurious_rewards.audit import clip_probe

ROOT = Path(__file__).resolve().parents[1]
PAPER = ROOT / "config" / "paper.yaml"


def _bench():
    spec = importlib.util.spec_from_file_location("bench_plan_memory", ROOT / "bench" / "bench_plan_memory.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_plan_memory"] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture()
def at_root(monkeypatch: pytest.MonkeyPatch) -> Path:
    """Config paths (organism folders, results/data) are relative to the repository root, as in Snakemake."""
    monkeypatch.chdir(ROOT)
    return ROOT


def _paper_raw() -> dict:
    return yaml.safe_load(PAPER.read_text())


def _validated(raw: dict) -> dict:
    return config.validate(copy.deepcopy(raw))


# ---------------------------------------------------------------------------
# architectures
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("hub_id", "billions"), [
    ("Qwen/Qwen2.5-Math-1.5B", 1.54), ("Qwen/Qwen2.5-Math-7B", 7.62), ("Qwen/Qwen2.5-7B", 7.62),
    ("meta-llama/Llama-3.2-3B", 3.21), ("meta-llama/Llama-3.1-8B-Instruct", 8.03),
    ("allenai/OLMo-2-1124-7B", 7.30),
])
def test_table_parameter_counts_match_the_model_cards(hub_id: str, billions: float) -> None:
    assert plan.KNOWN_ARCHITECTURES[hub_id].params / 1e9 == pytest.approx(billions, rel=0.01)


def test_every_paper_model_has_an_architecture(at_root: Path) -> None:
    cfg = _validated(_paper_raw())
    for m in cfg["models"]:
        assert plan.model_arch(cfg, m) is not None, m


def test_organism_config_json_gives_torch_parameter_count(at_root: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    path = ROOT / "workflow" / "resources" / "organisms" / "toy-qwen-math"
    a = plan.arch_from_hf_config(yaml.safe_load((path / "config.json").read_text()))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(path))
    assert a.params == sum(p.numel() for p in model.parameters())
    assert a.dtype_bytes == 4


def test_bad_config_json_names_the_file() -> None:
    with pytest.raises(ValueError, match="x/config.json"):
        plan.arch_from_hf_config({"hidden_size": 8}, source="x/config.json")


# ---------------------------------------------------------------------------
# estimates vs measured peaks (real code paths, two sizes each)
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["probe_step", "trl_update", "ckpt_bf16", "generate"])
@pytest.mark.parametrize("size", ["s", "m"])
def test_estimate_within_tolerance_of_measured_peak(case: str, size: str) -> None:
    bench = _bench()
    r = bench.CASES[case](size)
    assert r["measured"] > 0
    ratio = r["estimate"] / r["measured"]
    assert abs(ratio - 1) <= bench.TOLERANCE, (case, size, r)


def test_profiler_peak_sees_a_known_allocation() -> None:
    import torch

    bench = _bench()

    def fn() -> None:
        a = torch.empty(1_000_000, dtype=torch.float32)  # 4 MB
        b = torch.empty(500_000, dtype=torch.float32)  # 2 MB, both live
        del a, b
        torch.empty(250_000, dtype=torch.float32)

    assert bench.profile_peak(fn) == 6_000_000


# ---------------------------------------------------------------------------
# planted infeasible configs
# ---------------------------------------------------------------------------


def _no_probe(raw: dict) -> dict:
    raw = copy.deepcopy(raw)
    raw["audit"]["clip_probe"]["enabled"] = False
    return raw


def _only(raw: dict, *models: str) -> dict:
    raw["models"] = {m: raw["models"][m] for m in models}
    raw["audit"]["clip_probe"]["models"] = None
    return raw


def test_fp32_7b_trl_run_on_one_80gb_gpu_is_infeasible(at_root: Path) -> None:
    raw = _no_probe(_paper_raw())
    raw["backend"] = "trl"
    raw["grpo"]["gpus"] = 1
    _only(raw, "Qwen2.5-Math-7B")
    problems = plan.check(_validated(raw))
    train = [p for p in problems if p.startswith("train_grpo (Qwen2.5-Math-7B")]
    assert train, problems
    # weights + Adam alone: 12 bytes per parameter = 91 GB; the message names the fix
    update = next(p for p in train if "update" in p)
    assert "resources.gpu_memory_gb = 80" in update and "backend: openrlhf" in update
    assert "weights (fp32) 30.5" in update


def test_paper_clip_probe_fits_micro_batched_and_an_unbatched_one_fails_naming_the_setting(at_root: Path) -> None:
    """At paper settings the micro-batched probe plans within one 80 GB GPU; the probe as it was
    (the whole 1,024-sequence rollout in one generate call, a 64-sequence forward) is refused."""
    assert plan.check(_validated(_paper_raw())) == []
    raw = _paper_raw()
    raw["audit"]["clip_probe"].update(generation_batch=None, micro_batch=64, gradient_checkpointing=False,
                                      engine="hf")  # HF generate: the rollout's KV cache is the probe's
    problems = plan.check(_validated(raw))
    # the probe and every mechanism-map cell (the same job, the same batching) are refused alike
    assert problems and all(p.startswith(("probe_clip_bias (", "probe_mechanism (")) for p in problems), problems
    assert {p.split(" (")[0] for p in problems} == {"probe_clip_bias", "probe_mechanism"}
    probed = {p.split("(")[1].split(",")[0] for p in problems}
    assert probed == set(_paper_raw()["audit"]["clip_probe"]["models"])
    rollout = next(p for p in problems if "Qwen2.5-Math-1.5B, rollout generate" in p)
    # 1,024 sequences x 4,096 tokens x 56 KiB of fp32 K/V per token = 240 GB
    assert "KV cache (fp32, one generate call) 240.5" in rollout and "audit.clip_probe.generation_batch" in rollout
    update = next(p for p in problems if "Qwen2.5-Math-1.5B, update" in p)
    assert "audit.clip_probe.micro_batch" in update


def test_paper_clip_probe_rollouts_in_vllm_on_a_gpu(at_root: Path) -> None:
    """On a GPU job the probe's rollouts are vLLM's (engine auto): its share of the card beside the
    fp32 weights while awake, its CUDA context only while it sleeps through the step; a share too
    small for one sequence's KV cache is refused naming audit.clip_probe.vllm_memory."""
    cfg = _validated(_paper_raw())
    ests, _ = plan.memory_plan(cfg)
    probe = next(e for e in ests if e.rule == "probe_clip_bias" and e.model == "Llama-3.2-3B")
    rollout = probe.phases[0]
    assert rollout.name == "rollout generate (vLLM awake)" and "vLLM KV cache (rest of share)" in rollout.terms
    share = sum(v for k, v in rollout.terms.items() if k.startswith("vLLM") and "context" not in k)
    assert share == int(clip_probe.VLLM_MEMORY_UTILIZATION * 80 * plan.GB)
    assert all("vLLM asleep (CUDA context)" in ph.terms for ph in probe.phases[1:])
    assert not any("KV cache (fp32, one generate call)" in ph.terms for ph in probe.phases)
    raw = _paper_raw()
    raw["audit"]["clip_probe"]["vllm_memory"] = 0.1  # 8 GB: the 3B models' 6.4 GB of bf16 weights + overhead
    problems = plan.check(_validated(raw))
    small = [p for p in problems if p.startswith("probe_clip_bias (Llama-3.2-3B)")]
    assert small and "rollout phase: vLLM's share 0.10" in small[0], problems
    assert small[0].endswith("change: audit.clip_probe.vllm_memory")
    raw["audit"]["clip_probe"]["engine"] = "hf"
    ests, _ = plan.memory_plan(_validated(raw))
    probe = next(e for e in ests if e.rule == "probe_clip_bias" and e.model == "Llama-3.2-3B")
    assert probe.phases[0].name.startswith("rollout generate (32 sequences")


def test_paper_without_probe_fits_80gb_but_not_40gb(at_root: Path) -> None:
    raw = _no_probe(_paper_raw())
    assert plan.check(_validated(raw)) == []
    raw["resources"] = {"gpu_memory_gb": 40}
    problems = plan.check(_validated(raw))
    assert any(p.startswith("train_grpo (Qwen2.5-Math-7B, training") and "grpo.micro_batch" in p
               for p in problems), problems


def test_vllm_that_cannot_hold_one_context_length_sequence(at_root: Path) -> None:
    raw = _no_probe(_paper_raw())
    _only(raw, "Llama-3.1-8B")
    raw["resources"] = {"gpu_memory_gb": 24}
    problems = plan.check(_validated(raw))
    ev = [p for p in problems if p.startswith("evaluate_base/evaluate_run (Llama-3.1-8B)")]
    assert ev and "131072-token sequence" in ev[0], problems


def test_organism_config_plans_on_cpu_without_problems(at_root: Path) -> None:
    cfg = config.load(ROOT / "config.yaml")
    ests, notes = plan.memory_plan(cfg)
    assert notes == [] and {e.device for e in ests} == {"cpu"}
    assert plan.check(cfg) == []
    assert all(0 < e.peak.total < 4 * plan.GB for e in ests)


def test_unknown_hub_model_is_a_note_not_a_problem(at_root: Path) -> None:
    raw = _no_probe(_paper_raw())
    raw["models"] = {"mystery": {"path": "someone/mystery-7B", "template": "chat"}}
    raw["audit"]["clip_probe"]["models"] = None
    cfg = _validated(raw)
    ests, notes = plan.memory_plan(cfg)
    assert ests == [] and "mystery" in notes[0] and "KNOWN_ARCHITECTURES" in notes[0]
    assert plan.check(cfg) == []


def test_gpu_memory_budget_in_schema() -> None:
    cfg = _validated(_paper_raw())
    assert cfg["resources"]["gpu_memory_gb"] == plan.DEFAULT_GPU_MEMORY_GB
    raw = _paper_raw()
    raw["resources"] = {"gpu_memory_gb": 0}
    with pytest.raises(config.ConfigError, match="resources.gpu_memory_gb"):
        _validated(raw)


# ---------------------------------------------------------------------------
# cost
# ---------------------------------------------------------------------------


def test_paper_grid_checkpoint_storage_and_runs(at_root: Path) -> None:
    cfg = _validated(_paper_raw())
    costs = {c.phase: c for c in plan.cost_plan(cfg)}
    runs = list(config.runs(cfg))
    # 10 models x 14 reward/variant cells x 3 seeds + Qwen2.5-Math-7B's 5 extra random arms x 3
    assert costs["train_grpo"].jobs == len(runs) == 435
    steps = len(config.checkpoint_steps(cfg))
    expect = sum(steps * (plan.model_arch(cfg, r.model).params * 2 + plan.TOKENIZER_BYTES) for r in runs)
    assert costs["train_grpo"].storage["checkpoints (published; retention all)"] == pytest.approx(expect)
    # state/ holds only the resumable trainer state (the published checkpoints are hard links into it)
    state = costs["train_grpo"].storage["state/ (resumable; spurious prune deletes it)"]
    assert 0 < state < expect
    pruned = _validated({**_paper_raw(), "retention": {"state": "prune", "checkpoints": "final"}})
    kept = {c.phase: c for c in plan.cost_plan(pruned)}["train_grpo"].storage
    assert set(kept) == {"checkpoints (published; retention final)"}
    assert kept["checkpoints (published; retention final)"] == pytest.approx(expect / steps)
    assert 60e12 < expect < 80e12  # ~70 TB: the estimate of the published checkpoints
    total = sum(c.gpu_hours for c in costs.values())
    assert costs["train_grpo"].gpu_hours == max(c.gpu_hours for c in costs.values())
    assert 5_000 < total < 80_000
    assert costs["evaluate_run"].jobs == 435 and costs["label_majority_vote"].jobs == 10


def test_one_run_gpu_hours_follow_the_throughput_constants(at_root: Path) -> None:
    raw = _no_probe(_paper_raw())
    _only(raw, "Qwen2.5-Math-7B")
    raw["rewards"] = {"ground_truth": raw["rewards"]["ground_truth"]}
    raw["seeds"] = [1]
    cfg = _validated(raw)
    t = next(c for c in plan.cost_plan(cfg) if c.phase == "train_grpo")
    g = cfg["grpo"]
    resp = plan.MEAN_RESPONSE_FRACTION * g["max_new_tokens"]
    gen, train = plan.throughput(plan.KNOWN_ARCHITECTURES["Qwen/Qwen2.5-Math-7B"].params)
    rollout = g["prompts_per_rollout"] * g["group_size"]
    hours = (g["steps"] * rollout * resp / gen + g["steps"] * rollout * (plan.MEAN_PROMPT_TOKENS + resp) / train
             + g["gpus"] * plan.JOB_STARTUP_S) / 3600
    assert t.gpu_hours == pytest.approx(hours)


# ---------------------------------------------------------------------------
# the CLI
# ---------------------------------------------------------------------------


def test_cli_plan_on_the_paper_config(at_root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc = cli.main(["plan", "--configfile", str(PAPER)])
    out, err = capsys.readouterr()
    assert "Memory plan" in out and "Cost plan" in out
    for rule in ("train_grpo", "evaluate_base/evaluate_run", "label_majority_vote", "evaluate_baselines",
                 "audit_contamination", "probe_clip_bias"):
        assert rule in out
    assert "Qwen2.5-Math-7B" in out and "total" in out
    # every rule of the paper grid fits one 80 GB GPU per job (the probe micro-batched)
    assert rc == 0 and "cannot fit" not in err


def test_cli_plan_exits_0_when_everything_fits(at_root: Path, tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    cfg_path = tmp_path / "paper-no-probe.yaml"
    cfg_path.write_text(yaml.safe_dump(_no_probe(_paper_raw()), sort_keys=False))
    out_json = tmp_path / "plan.json"
    assert cli.main(["plan", "--configfile", str(cfg_path), "--json", str(out_json)]) == 0
    data = yaml.safe_load(out_json.read_text())
    assert data["problems"] == [] and data["memory"] and data["cost"]
    assert "cannot fit" not in capsys.readouterr().err


def test_plan_does_not_import_torch() -> None:
    code = ("import sys; from spurious_rewards import cli; "
            "rc = cli.main(['plan', '--configfile', 'config/paper.yaml']); "
            "print('torch' in sys.modules, rc)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT / "workflow"), "PATH": "/usr/bin:/bin"})
    assert proc.stdout.strip().splitlines()[-1] == "False 0", proc.stderr[-2000:]


def test_the_baselines_prompt_counts_worked_shots_and_placeholder_filler() -> None:
    """few_shot: every shot a problem and a worked solution as long as a response; lipsum: its filler."""
    import math

    from spurious_rewards import templates

    assert plan.baseline_prompt_tokens({"templates": ["chat", "boxed"], "shots": 4}, 100, 50) == 100
    assert plan.baseline_prompt_tokens({"templates": ["few_shot"], "shots": 4}, 100, 50) == 100 + 4 * 150
    filler = math.ceil(len(templates.LIPSUM_TEXT + "\n\n") / plan.PLACEHOLDER_CHARS_PER_TOKEN)
    assert plan.baseline_prompt_tokens({"templates": ["lipsum"], "shots": 4}, 100, 50) == 100 + filler
    assert plan.baseline_prompt_tokens({"templates": ["lorem"], "shots": 4}, 100, 50) < 100 + filler
