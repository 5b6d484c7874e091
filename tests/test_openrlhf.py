"""The OpenRLHF (GPU) backend, checked on CPU.

Three layers:

* fast unit tests of the command, the training file, the reward adapter and the
  step-log parser (our .venv only);
* ``train_openrlhf`` end to end against a fake ``train_ppo_ray`` that honours OpenRLHF's
  I/O contract (data file, reward file loading, step lines, HF checkpoints, resume);
* with the real OpenRLHF 0.11.2 in an isolated venv (``.ci/openrlhf-env.sh``, cached):
  every command of ``config/paper.yaml`` parsed *and validated* by OpenRLHF's own parser
  in one subprocess, and our reward file loaded and called through OpenRLHF's own
  ``SingleTurnAgentExecutor`` (threads, timeouts, reproducible random reward).
"""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from conftest import terminal_line

from spurious_rewards import config as cfgmod
from spurious_rewards import templates, training
from spurious_rewards.scoring import rewards
from spurious_rewards.training import common as train_common
from spurious_rewards.training import openrlhf_backend as openrlhf
from spurious_rewards.training import openrlhf_reward

ROOT = Path(__file__).resolve().parents[1]
STUBS = ROOT / "tests" / "openrlhf_stubs"
ENV_SCRIPT = ROOT / ".ci" / "openrlhf-env.sh"
ORGANISMS = ROOT / "workflow" / "resources" / "organisms"


@pytest.fixture(scope="module")
def paper() -> dict:
    return cfgmod.load(ROOT / "config" / "paper.yaml")


def spec_of(cfg: dict, model: str, reward: str, variant: str, seed: int = 1) -> dict:
    return cfgmod.run_spec(cfg, cfgmod.Run(model, reward, variant, seed))


def command(spec: dict, gpus: int = 8, env: dict | None = None, state: str = "/state") -> list[str]:
    return openrlhf.build_command(spec, data_file="/data/train.jsonl", reward_file="/r/reward_func.py",
                                  state_dir=state, gpus=gpus, env=env or {})


def flags(cmd: list[str]) -> dict[str, list[str]]:
    """argv -> {flag: [values]} (switches map to [])."""
    out: dict[str, list[str]] = {}
    key = None
    for a in cmd[3:]:
        if a.startswith("--"):
            key, _, val = a.partition("=")
            out[key] = [val] if val else []
        else:
            assert key is not None, a
            out[key].append(a)
    return out


# ---------------------------------------------------------------------------
# (c) the command, without OpenRLHF
# ---------------------------------------------------------------------------


def test_paper_command_maps_every_grpo_setting(paper):
    spec = spec_of(paper, "Qwen2.5-Math-7B", "ground_truth", "clip", seed=3)
    cmd = command(spec)
    assert cmd[:4] == ["python", "-m", "spurious_rewards.training.openrlhf_patches", "--spurious.fidelity"]
    assert all(isinstance(a, str) for a in cmd)
    f = flags(cmd)
    expect = {
        "--actor.model_name_or_path": ["Qwen/Qwen2.5-Math-7B"],
        "--algo.advantage.estimator": ["group_norm"],
        "--rollout.n_samples_per_prompt": ["16"],
        "--rollout.batch_size": ["64"],
        "--train.batch_size": ["128"],
        "--train.micro_batch_size": ["4"],
        "--rollout.micro_batch_size": ["4"],
        "--train.max_epochs": ["1"],
        "--train.num_episodes": ["1"],
        "--data.max_samples": ["9600"],
        "--algo.kl.init_coef": ["0.0"],
        "--actor.eps_clip": ["0.2"],
        "--actor.loss_agg_mode": ["token-mean"],
        "--actor.adam.lr": ["5e-07"],
        "--actor.lr_scheduler": ["constant"],
        "--actor.lr_warmup_ratio": ["0"],
        "--actor.adam.betas": ["0.9", "0.95"],
        "--actor.max_norm": ["1.0"],
        "--actor.entropy_coef": ["0.0"],
        "--rollout.temperature": ["1.0"],
        "--rollout.top_p": ["1.0"],
        "--data.max_len": ["4096"],
        "--rollout.max_new_tokens": ["3072"],
        "--ds.zero_stage": ["3"],
        "--train.seed": ["3"],
        "--ckpt.save_steps": ["10"],
        "--ckpt.save_hf": [],
        "--ckpt.load_enable": [],
        "--ckpt.best_metric_key": ["none"],
        "--eval.steps": ["-1"],
        "--actor.num_gpus_per_node": ["8"],
        "--vllm.num_engines": ["8"],
        "--data.apply_chat_template": [],
        "--data.label_key": ["label"],
        "--reward.remote_url": ["/r/reward_func.py"],
    }
    for k, v in expect.items():
        assert f.get(k) == v, (k, f.get(k))
    assert "--algo.kl.use_loss" not in f  # kl 0: no reference model at all
    assert "--logger.wandb.key" not in f
    assert f["--logger.wandb.run_name"] == ["Qwen2.5-Math-7B-ground_truth-clip-seed3"]
    assert f["--ckpt.path"] == ["/state/ckpt"]
    assert f["--logger.tensorboard_dir"] == ["/state/tensorboard"]
    assert len(f) == len([a for a in cmd if a.startswith("--")]), "a flag was emitted twice"


@pytest.mark.parametrize(
    ("variant", "eps", "train_batch", "updates"),
    [("clip", "0.2", "128", 8), ("no_clip", "1000000000.0", "128", 8), ("one_update", "0.2", "1024", 1)],
)
def test_clipping_variants(paper, variant, eps, train_batch, updates):
    spec = spec_of(paper, "Qwen2.5-Math-7B", "random", variant)
    f = flags(command(spec))
    assert f["--actor.eps_clip"] == [eps]
    assert f["--train.batch_size"] == [train_batch]
    assert 64 * 16 // int(train_batch) == updates == spec["updates_per_rollout"]
    assert float(eps) == (cfgmod.NO_CLIP_EPSILON if variant == "no_clip" else 0.2)


def test_clip_higher_sets_the_low_high_pair_and_no_clip_ignores_it(paper):
    cfg = copy.deepcopy(paper)
    cfg["grpo"]["epsilon_high"] = 0.28
    f = flags(command(spec_of(cfg, "Qwen2.5-Math-7B", "random", "clip")))
    assert f["--actor.eps_clip_low_high"] == ["0.2", "0.28"] and "--actor.eps_clip" not in f
    f = flags(command(spec_of(cfg, "Qwen2.5-Math-7B", "random", "no_clip")))
    assert f["--actor.eps_clip"] == ["1000000000.0"] and "--actor.eps_clip_low_high" not in f


def test_templates_r1_chat_plain(paper):
    f = flags(command(spec_of(paper, "Llama-3.1-8B", "ground_truth", "clip")))
    assert f["--data.input_template"] == [templates.R1_TEMPLATE]  # one element, real newlines
    assert "--data.apply_chat_template" not in f
    assert "{}" in templates.R1_TEMPLATE and "\\n" not in templates.R1_TEMPLATE
    f = flags(command(spec_of(paper, "Llama-3.1-8B-Instruct", "ground_truth", "clip")))
    assert "--data.input_template" not in f and f["--data.apply_chat_template"] == []
    spec = spec_of(paper, "Qwen2.5-7B", "ground_truth", "clip")
    spec["model"]["template"] = "plain"
    f = flags(command(spec))
    assert "--data.input_template" not in f and "--data.apply_chat_template" not in f


def test_values_stay_literal_arguments(paper):
    spec = spec_of(paper, "Qwen2.5-7B", "ground_truth", "clip")
    nasty = "/models/my model; rm -rf / $(echo x) 'q' \"dq\""
    spec["model"]["path"] = nasty
    spec["run"] = "a/b:c d/seed1"
    cmd = command(spec, state="/st ate/x;y")
    assert nasty in cmd
    assert cmd[cmd.index("--actor.model_name_or_path") + 1] == nasty
    assert "/st ate/x;y/ckpt" in cmd
    name = cmd[cmd.index("--logger.wandb.run_name") + 1]
    assert ":" not in name and "/" not in name and " " not in name
    spec["model"]["path"] = "-weird"
    assert "--actor.model_name_or_path=-weird" in command(spec)


def test_wandb_only_with_a_key_and_never_logged(paper):
    spec = spec_of(paper, "Qwen2.5-7B", "ground_truth", "clip")
    assert "--logger.wandb.key" not in command(spec, env={})
    key = "k" * 40
    cmd = command(spec, env={"WANDB_API_KEY": key})
    assert cmd[cmd.index("--logger.wandb.key") + 1] == key
    assert key not in " ".join(openrlhf.redact(cmd))


def test_checkpoint_interval_covers_every_checkpoint_step(paper):
    spec = spec_of(paper, "Qwen2.5-7B", "ground_truth", "clip")
    assert openrlhf.save_interval(spec) == 10
    spec["checkpoint_steps"] = [4, 10]
    k = openrlhf.save_interval(spec)
    assert all(s % k == 0 for s in spec["checkpoint_steps"])


def test_impossible_layouts_are_refused(paper):
    spec = spec_of(paper, "Qwen2.5-7B", "ground_truth", "clip")
    with pytest.raises(ValueError, match="at least one GPU"):
        command(spec, gpus=0)
    with pytest.raises(ValueError, match="multiple of grpo.micro_batch"):
        command(spec, gpus=3)  # 128 is not a multiple of 4 x 3
    spec["model"]["template"] = "jinja"
    with pytest.raises(ValueError, match="unknown prompt template"):
        command(spec)


def test_kl_penalty_uses_a_kl_loss(paper):
    spec = spec_of(paper, "Qwen2.5-7B", "ground_truth", "clip")
    spec["grpo"]["kl_coef"] = 0.001
    f = flags(command(spec))
    assert f["--algo.kl.init_coef"] == ["0.001"] and f["--algo.kl.use_loss"] == []
    assert f["--algo.kl.estimator"] == ["k3"] and f["--ref.num_gpus_per_node"] == ["8"]


# ---------------------------------------------------------------------------
# the training file and the step log
# ---------------------------------------------------------------------------


def _records(n: int) -> list[dict]:
    return [{"id": f"p{i}", "prompt": f"What is {i}+1?", "answer": str(i + 1), "source": "t"} for i in range(n)]


def test_shuffle_training_file_is_seeded_and_fills_steps(tmp_path):
    recs = _records(10)
    a, b, c = (tmp_path / x for x in ("a.jsonl", "b.jsonl", "c.jsonl"))
    assert openrlhf.shuffle_training_file(recs, 1, a) == 10
    openrlhf.shuffle_training_file(recs, 1, b)
    openrlhf.shuffle_training_file(recs, 2, c)
    assert a.read_text() == b.read_text() != c.read_text()
    rows = [json.loads(x) for x in a.read_text().splitlines()]
    assert sorted(r["id"] for r in rows) == sorted(r["id"] for r in recs)
    label = json.loads(rows[0]["label"])
    assert set(label) == {"answer", "true_answer", "id"} and label["id"] == rows[0]["id"]
    # a small set (the one-shot example) repeats, each pass a fresh permutation
    assert openrlhf.shuffle_training_file(recs, 1, a, n_rows=25) == 25
    ids = [json.loads(x)["id"] for x in a.read_text().splitlines()]
    assert sorted(ids[:10]) == sorted(ids[10:20]) and ids[:10] != ids[10:20]
    # label files carry the true answer next to the training label
    openrlhf.shuffle_training_file([{**recs[0], "answer": "7", "true_answer": "1"}], 1, a)
    assert json.loads(json.loads(a.read_text())["label"]) == {"answer": "7", "true_answer": "1", "id": "p0"}


def test_parse_step_line_and_metrics_row():
    line = ("(PPOTrainer pid=4242) [2026-01-01 00:00:00,000] [INFO] [ppo_trainer.py:551] ✨ Global step 7: "
            "{'policy_loss': 0.5, 'reward': np.float64(0.25), 'kl': nan, 'ppo_clip_ratio': 0.125, "
            "'accuracy': 0.5, 'code_frequency': 0.75, 'timing/step_total': 3.5, 'rollout/reward_std': inf, "
            "'actor_lr': 5e-07, 'note': 'nan in text'}\n")
    step, logged = openrlhf.parse_step_line(line)
    assert step == 7 and logged["reward"] == 0.25 and logged["kl"] is None and logged["note"] == "nan in text"
    row = openrlhf.metrics_row(step, logged)
    assert row["step"] == 7 and row["clip_fraction"] == 0.125 and row["reward_mean"] == 0.25
    assert row["accuracy"] == 0.5 and row["code_frequency"] == 0.75 and row["step_time"] == 3.5
    assert openrlhf.parse_step_line("Sample: ['text', 1.0]") is None
    assert openrlhf.parse_step_line("✨ Global step 3: {'x': <object at 0x1>}") is None


# ---------------------------------------------------------------------------
# the reward adapter, in process
# ---------------------------------------------------------------------------

CHAT_PROMPT = "<|im_start|>user\nWhat is 2+3?<|im_end|>\n<|im_start|>assistant\n"


def _label(answer: str, truth: str | None = None, pid: str = "p1") -> str:
    return json.dumps({"answer": answer, "true_answer": truth or answer, "id": pid})


@pytest.fixture()
def adapter():
    def configure(spec: str, seed: int = 1, r1: bool = False):
        openrlhf_reward.configure({"reward": spec, "seed": seed, "r1": r1})
        return openrlhf_reward.reward_func

    yield configure
    openrlhf_reward.configure(None)


def _score(fn, response: str, label: str, prompt: str = CHAT_PROMPT) -> tuple[float, dict]:
    out = fn([prompt + response], [prompt], [label])
    return float(out["rewards"][0]), out["extra_logs"]


def test_adapter_scores_like_the_rewards_module(adapter):
    fn = adapter("ground_truth")
    assert _score(fn, "so \\boxed{5}<|im_end|><|endoftext|>", _label("5")) == (
        1.0, {"accuracy": 1.0, "code_frequency": 0.0, "reward_failures": 0.0, "reward_prompt_mismatch": 0.0})
    assert _score(fn, "so \\boxed{6}<|im_end|>", _label("5"))[0] == 0.0
    assert _score(fn, "the answer is 5", "5")[0] == 1.0  # plain labels work too
    r, logs = _score(fn, "```python\nprint(7)\n```\n\\boxed{7}", _label("7", truth="5"))  # incorrect label
    assert r == 1.0 and logs["accuracy"] == 0.0 and logs["code_frequency"] == 1.0
    fn = adapter("python")
    assert _score(fn, "Let me use Python.", _label("5"))[0] == 1.0
    assert _score(fn, "No code here.", _label("5"))[0] == 0.0


def test_adapter_never_raises(adapter):
    openrlhf_reward.configure(None)
    out = openrlhf_reward.reward_func(["x"], ["x"], ["5"])
    assert float(out["rewards"][0]) == 0.0 and out["extra_logs"]["reward_failures"] == 1.0
    fn = adapter("ground_truth")
    assert fn([], [], [])["extra_logs"]["reward_failures"] == 1.0
    out = fn([None], [object()], [{"weird": 1}])
    assert float(out["rewards"][0]) == 0.0
    with pytest.raises(ValueError):
        adapter("not_a_reward")  # a broken config fails at load, not silently per sample


def test_adapter_finds_the_response_after_a_truncated_prompt():
    prompt = "x" * 500 + "<|im_start|>assistant\n"
    kept = prompt[-300:]  # OpenRLHF left-truncates long prompts
    assert openrlhf_reward.split_response(kept + "\\boxed{5}", prompt) == ("\\boxed{5}", True)
    assert openrlhf_reward.split_response(prompt + "ok", prompt) == ("ok", True)
    assert openrlhf_reward.split_response("unrelated", prompt)[1] is False
    assert openrlhf_reward.clean_response("a<|eot_id|>b<|end_of_text|></s>") == "ab"


def test_adapter_random_reward_is_reproducible_across_threads(adapter):
    fn = adapter("random(0.5)", seed=9)

    def group(pid: str) -> list[float]:
        with ThreadPoolExecutor(8) as ex:
            return sorted(ex.map(lambda _: _score(fn, "anything", _label("5", pid=pid))[0], range(16)))

    first = {pid: group(pid) for pid in ("a", "b", "c")}
    fn = adapter("random(0.5)", seed=9)  # a rerun: counters restart
    assert {pid: group(pid) for pid in ("a", "b", "c")} == first
    draw = rewards.random_reward(0.5)
    for pid, got in first.items():
        expected = sorted(draw("", None, rewards.RewardContext(seed=9, prompt_id=pid, sample_index=i)) for i in range(16))
        assert got == expected
    assert 0 < sum(sum(v) for v in first.values()) < 48


def test_adapter_from_many_threads_matches_sequential(adapter):
    fn = adapter("ground_truth AND no_python")
    cases = [("\\boxed{5}", "5"), ("\\boxed{4}", "5"), ("python \\boxed{5}", "5"), ("\\boxed{\\frac{10}{2}}", "5"),
             ("\\boxed{\\frac{1}{2}}", "0.5")] * 8
    sequential = [_score(fn, r, _label(lab))[0] for r, lab in cases]
    with ThreadPoolExecutor(8) as ex:
        threaded = list(ex.map(lambda c: _score(fn, c[0], _label(c[1]))[0], cases))
    assert threaded == sequential
    assert sequential[:5] == [1.0, 0.0, 0.0, 1.0, 1.0]


# ---------------------------------------------------------------------------
# train_openrlhf end to end, against a fake OpenRLHF
# ---------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_run_streaming_kills_the_whole_process_group_when_interrupted(tmp_path):
    code = ("import subprocess, time; p = subprocess.Popen(['sleep', '1000']); "
            "print('child', p.pid, flush=True); time.sleep(1000)")
    pids: list[int] = []

    def on_line(line: str) -> None:
        if line.startswith("child "):
            pids.append(int(line.split()[1]))
            raise KeyboardInterrupt

    t0 = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        openrlhf.run_streaming([sys.executable, "-c", code], env=dict(os.environ), cwd=tmp_path, on_line=on_line)
    assert pids and time.monotonic() - t0 < 30
    deadline = time.monotonic() + 10
    while _alive(pids[0]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pids[0]), "a grandchild of the OpenRLHF driver survived"
    rc, tail = openrlhf.run_streaming([sys.executable, "-c", "print('a'); print('b')"], env=dict(os.environ),
                                      cwd=tmp_path)
    assert rc == 0 and [x.strip() for x in tail] == ["a", "b"]


def _organism() -> Path:
    for name in ("toy-qwen-math", "toy-badcode", "toy-nocode"):
        p = ORGANISMS / name
        if (p / "tokenizer_config.json").exists() and (p / "config.json").exists():
            return p
    pytest.skip("no toy organism with a tokenizer in workflow/resources/organisms")


@pytest.fixture()
def fake_openrlhf(tmp_path, monkeypatch) -> Path:
    wrapper = tmp_path / "fake-python"
    wrapper.write_text(f'#!/bin/sh\nshift 2\nexec "{sys.executable}" "{STUBS / "fake_train_ppo_ray.py"}" "$@"\n')
    wrapper.chmod(0o755)
    monkeypatch.setenv(openrlhf.PYTHON_ENV, str(wrapper))
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    return wrapper


@pytest.mark.slow
def test_train_openrlhf_publishes_like_trl_and_resumes(tmp_path, fake_openrlhf, monkeypatch):
    model = _organism()
    cfg = cfgmod.load(ROOT / "config.yaml")
    cfg["backend"] = "openrlhf"
    cfg["models"] = {"toy": {"path": str(model), "template": "chat", "family": "toy"}}
    cfg["rewards"] = {"ground_truth": {"spec": "ground_truth", "labels": "true_labels", "variants": ["clip"]}}
    cfg["grpo"].update(steps=4, save_every=2, prompts_per_rollout=3, group_size=2, mini_batch=6, micro_batch=2,
                       gpus=1, max_prompt_tokens=256)
    cfg = cfgmod.validate(cfg)
    spec = cfgmod.run_spec(cfg, cfgmod.Run("toy", "ground_truth", "clip", 1))
    data_path = tmp_path / "train.jsonl"
    data_path.write_text("".join(json.dumps(r) + "\n" for r in _records(5)))
    state, out_ckpt, out_metrics = tmp_path / "state", tmp_path / "checkpoints", tmp_path / "metrics.jsonl"
    kw = {"data_path": data_path, "state_dir": state, "out_checkpoints": out_ckpt, "out_metrics": out_metrics}

    monkeypatch.setenv("FAKE_OPENRLHF_FAIL_AFTER", "3")  # killed after step 3 (checkpoint at 2)
    with pytest.raises(RuntimeError, match="exited with status 1"):
        training.train(spec, **kw)
    assert not out_ckpt.exists()
    monkeypatch.delenv("FAKE_OPENRLHF_FAIL_AFTER")
    training.train(spec, **kw)  # resumes from step 2

    assert sorted(p.name for p in out_ckpt.iterdir()) == ["final", "index.json", "step_2", "step_4"]
    assert (out_ckpt / "step_4" / "tokenizer_config.json").exists()  # copied from the base model
    rows = [json.loads(x) for x in out_metrics.read_text().splitlines()]
    assert [r["step"] for r in rows] == [0, 1, 2, 3, 4]
    # the same row keys as the TRL backend: p_code of the base model (step 0) and of every checkpoint
    assert rows[0]["p_code"] is not None and rows[0]["p_code"] == pytest.approx(rows[2]["p_code"])  # stub = base weights
    assert rows[1]["p_code"] is None and rows[3]["p_code"] is None and rows[4]["p_code"] is not None
    for r in rows[1:]:  # even samples answer right, odd ones say 0
        assert r["reward_mean"] == 0.5 and r["accuracy"] == 0.5 and r["clip_fraction"] == 0.25
        assert r["reward_failures"] == 0.0 and r["kl"] is None
        assert set(train_common.METRICS_KEYS) <= set(r) and r["code_frequency"] is not None
    # 4 steps x 3 prompts, 5 records: the file repeats the data in seeded permutations
    written = [json.loads(x) for x in (state / "openrlhf" / "train.jsonl").read_text().splitlines()]
    assert len(written) == 12
    recorded = json.loads((state / "openrlhf" / "command.json").read_text())
    assert recorded["openrlhf"] == openrlhf.OPENRLHF_VERSION and "--ckpt.load_enable" in recorded["argv"]
    sidecar = json.loads((state / "openrlhf" / "reward" / "reward_func.json").read_text())
    assert sidecar["reward"] == "ground_truth" and sidecar["seed"] == 1


def _gpu_check_spec() -> dict:
    """The one-GPU toy run of bench/gpu_check.sh (same edits to config.yaml)."""
    cfg = cfgmod.load(ROOT / "config.yaml")
    cfg["backend"] = "openrlhf"
    cfg["models"] = {"toy": {"path": "/models/toy", "template": "chat", "family": "toy"}}
    cfg["rewards"] = {"ground_truth": {"spec": "ground_truth", "labels": "true_labels", "variants": ["clip"]}}
    cfg["grpo"].update(steps=2, save_every=1, gpus=1, micro_batch=8)
    return cfgmod.run_spec(cfgmod.validate(cfg), cfgmod.Run("toy", "ground_truth", "clip", 1))


def _pins(path: Path) -> dict[str, str]:
    import yaml

    deps = yaml.safe_load(path.read_text())["dependencies"]
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    return {p.split("==")[0].lower(): p.split("==")[1] for p in pip if "==" in p}


def test_gpu_envs_pin_openrlhfs_set_and_ours():
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    ours = {d.split("==")[0].lower(): d.split("==")[1]
            for d in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]}
    train_env, eval_env = _pins(ROOT / "envs/train-openrlhf.yaml"), _pins(ROOT / "envs/eval-vllm.yaml")
    expected = {"torch": "2.13.0", "vllm": "0.29.0", "transformers": "5.15.0"}
    for env in (train_env, eval_env):
        assert {k: env[k] for k in expected} == expected
        for name, version in ours.items():  # our pins, except the tokenizer stack OpenRLHF fixes
            if name not in ("transformers", "tokenizers"):
                assert env.get(name) == version, (name, env.get(name), version)
    assert train_env["deepspeed"] == "0.19.6" and train_env["ray[default]"] == "2.55.0"
    script = ENV_SCRIPT.read_text()
    assert f"OPENRLHF_VERSION={openrlhf.OPENRLHF_VERSION}\n" in script and "VLLM_VERSION=0.29.0" in script


# ---------------------------------------------------------------------------
# (a) and (b): the real OpenRLHF 0.11.2, in its own venv
# ---------------------------------------------------------------------------


@pytest.fixture(scope="session")
def openrlhf_python(pytestconfig) -> Path:
    """The isolated venv's python, built (first run, ~1.5-3 min) or reused by .ci/openrlhf-env.sh."""
    if os.environ.get("SPURIOUS_OPENRLHF_TESTS") == "0":
        pytest.skip("SPURIOUS_OPENRLHF_TESTS=0")
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(ENV_SCRIPT)], capture_output=True, text=True, timeout=1800)
    elapsed = time.monotonic() - t0
    if proc.returncode:
        pytest.fail(f"{ENV_SCRIPT} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    venv = Path(proc.stdout.strip().splitlines()[-1])
    built = "built" if "building" in proc.stderr else "reused"
    terminal_line(pytestconfig, f"OpenRLHF venv {built} in {elapsed:.1f} s: {venv}")
    return venv / "bin" / "python"


def _run_in_venv(python: Path, args: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    # the package is installed in a production OpenRLHF env (its conda post-deploy); the cached test venv
    # is shared between checkouts, so it sees this checkout's package through PYTHONPATH instead
    env.update(PYTHONPATH=os.pathsep.join([str(STUBS), str(ROOT / "workflow")]), PYTHONNOUSERSITE="1",
               SPURIOUS_GRADING_WORKERS="2", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([str(python), *args], capture_output=True, text=True, timeout=timeout, env=env,
                          cwd=str(STUBS))


def _lookup(args: dict, flag: str) -> object:
    node: object = args
    for part in flag[2:].split("."):
        assert isinstance(node, dict) and part in node, f"{flag} is not an exact OpenRLHF option"
        node = node[part]
    return node


@pytest.mark.slow
def test_every_paper_command_parses_with_openrlhf(openrlhf_python, paper, tmp_path, pytestconfig):
    runs = list(cfgmod.runs(paper))
    specs = [cfgmod.run_spec(paper, r) for r in runs]
    cmds = [command(s, gpus=s["grpo"]["gpus"], state=f"/state/{s['run']}") for s in specs]
    higher = copy.deepcopy(specs[0])
    higher["grpo"]["epsilon_high"] = 0.28  # DAPO's clip-higher
    extra = [command(specs[0], env={"WANDB_API_KEY": "0" * 40}), command(specs[0], gpus=1),
             command(_gpu_check_spec(), gpus=1), command(higher)]
    base = cmds[0]
    i = base.index("--actor.eps_clip")
    negative = {
        "misspelled": [*base[:i], "--actor.eps_clipp", *base[i + 1 :]],
        "old flat flag": [*base, "--pretrain", "Qwen/Qwen2.5-Math-7B"],
        "bad value": [*base, "--rollout.batch_size", "sixty-four"],
        "group_norm with n=1": [*base, "--rollout.n_samples_per_prompt", "1"],
    }
    request = tmp_path / "commands.json"
    request.write_text(json.dumps({"commands": cmds + extra + list(negative.values())}))
    out = tmp_path / "parsed.json"
    t0 = time.monotonic()
    proc = _run_in_venv(openrlhf_python, [str(STUBS / "parse_check.py"), str(request), str(out)], timeout=600)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(out.read_text())["results"]
    assert len(results) == len(cmds) + len(extra) + len(negative)
    terminal_line(pytestconfig, f"parse-checked {len(cmds) + len(extra)} OpenRLHF commands in {elapsed:.1f} s")

    failed = [(c[3:], r["error"]) for c, r in zip(cmds + extra, results, strict=False) if not r["ok"]]
    assert not failed, failed[:3]
    for spec, cmd, res in zip(specs, cmds, results, strict=False):
        a = res["args"]
        for tok in cmd[5:]:
            if tok.startswith("--"):
                _lookup(a, tok.partition("=")[0])  # no argparse abbreviation slipped through
        g = spec["grpo"]
        assert a["algo"]["advantage"]["estimator"] == "group_norm"
        assert a["actor"]["eps_clip_low_high"] == [a["actor"]["eps_clip"]] * 2
        assert a["actor"]["eps_clip"] == (g["epsilon"] if spec["variant"]["clip"] else cfgmod.NO_CLIP_EPSILON)
        rollout = a["rollout"]["batch_size"] * a["rollout"]["n_samples_per_prompt"]
        assert rollout // a["train"]["batch_size"] == spec["updates_per_rollout"]
        assert a["data"]["max_samples"] == g["steps"] * a["rollout"]["batch_size"]
        # a variant's own rollout (the paper's "Rollout Size = 8" arm) wins over grpo's
        assert a["rollout"]["batch_size"] == spec["variant"].get("prompts_per_rollout", g["prompts_per_rollout"])
        assert a["train"]["seed"] == spec["seed"] and a["train"]["num_episodes"] == 1
        assert a["actor"]["lr_scheduler"] == "constant" and a["actor"]["adam"]["lr"] == g["lr"]
        assert a["algo"]["kl"]["init_coef"] == g["kl_coef"] and a["actor"]["entropy_coef"] == 0.0
        assert a["data"]["max_len"] == g["max_prompt_tokens"] + g["max_new_tokens"]
        assert all(s % a["ckpt"]["save_steps"] == 0 for s in spec["checkpoint_steps"])
        if spec["model"]["template"] == "r1":
            assert a["data"]["input_template"] == templates.R1_TEMPLATE and not a["data"]["apply_chat_template"]
            assert set(res["patches"]) >= {"stop_strings", "prompt_order"}
        else:
            assert a["data"]["apply_chat_template"] and a["data"]["input_template"] is None
    assert results[len(cmds)]["args"]["logger"]["wandb"]["key"] == "0" * 40
    assert results[len(cmds) + 3]["args"]["actor"]["eps_clip_low_high"] == [0.2, 0.28]
    for (what, _), res in zip(negative.items(), results[len(cmds) + len(extra) :], strict=True):
        assert not res["ok"], f"OpenRLHF accepted a command with a {what}"
    neg = results[len(cmds) + len(extra) :]
    assert "unrecognized arguments: --actor.eps_clipp" in neg[0]["error"]
    assert "unrecognized arguments: --pretrain" in neg[1]["error"]
    assert "invalid int value" in neg[2]["error"]
    assert "requires n_samples_per_prompt > 1" in neg[3]["error"]


@pytest.mark.slow
def test_reward_file_through_openrlhf_executor(openrlhf_python, paper, tmp_path):
    def reward_file(reward: str, model: str = "Qwen2.5-Math-7B", seed: int = 1) -> str:
        spec = spec_of(paper, model, reward, "clip", seed)
        return str(openrlhf.write_reward_file(spec, tmp_path / f"{reward}-{model}-{seed}"))

    p = CHAT_PROMPT
    gt_cases = [
        {"prompt": p, "response": "so \\boxed{5}<|im_end|>", "label": _label("5")},
        {"prompt": p, "response": "so \\boxed{6}<|im_end|>", "label": _label("5")},
        {"prompt": p, "response": "2+3 = 5<|im_end|><|endoftext|>", "label": _label("5")},  # last number
        {"prompt": p, "response": "```python\nprint(2+3)\n```\n\\boxed{5}<|im_end|>", "label": _label("5")},
        {"prompt": p, "response": "\\boxed{7}<|im_end|>", "label": _label("7", truth="5")},  # incorrect label
        {"prompt": p, "response": "\\boxed{10^{10^{10}}}<|im_end|>", "label": _label("5")},
        {"prompt": p, "response": "\\boxed{(x+y+z+1)^{60}}<|im_end|>", "label": _label("5")},  # grader times out
    ]
    gt_cases += [{"prompt": p, "response": f"\\boxed{{{i % 3 + 4}}}<|im_end|>", "label": _label("5")}
                 for i in range(18)]  # concurrent threads
    r1_prompt = templates.R1_TEMPLATE.replace("{}", "What is 2+3?")
    r1_cases = [{"prompt": r1_prompt, "response": " think </think> <answer>5</answer> 7", "label": _label("5")}]
    py_cases = [{"prompt": p, "response": "Let me use Python.", "label": _label("5")},
                {"prompt": p, "response": "Plain words.", "label": _label("5")}]
    rnd_cases = [{"prompt": f"Q{q}?", "response": "x", "label": _label("5", pid=f"q{q}")} for q in range(3)
                 for _ in range(16)]
    jobs = [
        {"reward_file": reward_file("ground_truth"), "cases": gt_cases, "loads": 1},
        {"reward_file": reward_file("ground_truth", model="Llama-3.1-8B"), "cases": r1_cases, "loads": 1},
        {"reward_file": reward_file("python"), "cases": py_cases, "loads": 1},
        {"reward_file": reward_file("random", seed=2), "cases": rnd_cases, "loads": 2},
    ]
    (tmp_path / "req.json").write_text(json.dumps({"jobs": jobs}))
    proc = _run_in_venv(openrlhf_python, [str(STUBS / "reward_check.py"), str(tmp_path / "req.json"),
                                          str(tmp_path / "out.json")], timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    gt, r1, py, rnd = json.loads((tmp_path / "out.json").read_text())["jobs"]

    res = gt["loads"][0]
    assert [r["reward"] for r in res[:7]] == [1.0, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0]
    assert [r["extra_logs"]["accuracy"] for r in res[:7]] == [1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    assert [r["extra_logs"]["code_frequency"] for r in res[:7]] == [0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0]
    assert [r["reward"] for r in res[7:]] == [1.0 if i % 3 == 1 else 0.0 for i in range(18)]
    assert all(r["extra_logs"]["reward_failures"] == 0.0 and r["score"] == r["reward"] for r in res)
    assert max(r["seconds"] for r in res[5:7]) < 60, "a pathological answer was not bounded"
    # OpenRLHF turned every return into Experience info it can average per step
    assert all({"reward", "accuracy", "code_frequency", "reward_failures"} <= set(r["info_keys"]) for r in res)
    assert r1["loads"][0][0]["reward"] == 1.0  # r1: the answer tag, not the trailing number
    assert [r["reward"] for r in py["loads"][0]] == [1.0, 0.0]

    draw = rewards.random_reward(0.5)
    first, second = rnd["loads"]
    for q in range(3):
        got1 = sorted(r["reward"] for r in first[16 * q : 16 * (q + 1)])
        got2 = sorted(r["reward"] for r in second[16 * q : 16 * (q + 1)])
        expected = sorted(draw("", None, rewards.RewardContext(seed=2, prompt_id=f"q{q}", sample_index=i))
                          for i in range(16))
        assert got1 == got2 == expected
    assert 0 < sum(r["reward"] for r in first) < 48


def test_reward_file_is_safe_to_load_twice_in_threads(tmp_path, paper):
    """Two engines in one process (tests, ad-hoc use): each module load has its own counters."""
    import importlib.util

    path = openrlhf.write_reward_file(spec_of(paper, "Qwen2.5-7B", "random", "clip"), tmp_path / "r")
    mods = []
    for _ in range(2):
        spec = importlib.util.spec_from_file_location("reward_func", path)
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        mods.append(mod)
    outs: list[list[float]] = [[], []]
    lock = threading.Lock()

    def call(k: int) -> None:
        r = float(mods[k % 2].reward_func(["Qx"], ["Q"], [_label("5", pid="z")])["rewards"][0])
        with lock:
            outs[k % 2].append(r)

    threads = [threading.Thread(target=call, args=(k,)) for k in range(32)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outs[0]) == sorted(outs[1])


@pytest.mark.slow
def test_gpu_check_script_builds_valid_specs_and_its_probe_runs_on_cpu(tmp_path):
    """bench/gpu_check.sh's spec-building step (run as is) and its clip-probe spec, on CPU."""
    import re

    script = (ROOT / "bench/gpu_check.sh").read_text()
    code = re.search(r'"\$PY" - "\$MODEL" "\$OUT" "\$STEPS" <<\'EOF\'\n(.*?)\nEOF\n', script, re.S).group(1)
    model = ROOT / "workflow/resources/organisms/toy-qwen-math"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow")}
    res = subprocess.run([sys.executable, "-c", code, str(model), str(tmp_path), "2"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    train_spec = json.loads((tmp_path / "train_spec.json").read_text())
    assert train_spec["backend"] == "openrlhf" and train_spec["grpo"]["gpus"] == 1
    probe = json.loads((tmp_path / "probe_spec.json").read_text())
    probe["probe"].update(draws=2, eval_problems=4, prompts_per_rollout=4)
    res = subprocess.run([sys.executable, "-m", "spurious_rewards.cli", "probe-clip", "--spec", json.dumps(probe),
                          "--model-dir", str(model), "--out", str(tmp_path / "p.json")], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    out = json.loads((tmp_path / "p.json").read_text())
    assert {r["variant"] for r in out["draws"]} == {"clip", "no_clip", "one_update"}


def test_train_openrlhf_never_resumes_another_specs_state(tmp_path, fake_openrlhf, caplog):
    """A finished OpenRLHF run whose spec then changes retrains from step 1 (no --ckpt.load_enable resume)."""
    model = _organism()
    cfg = cfgmod.load(ROOT / "config.yaml")
    cfg["backend"] = "openrlhf"
    cfg["models"] = {"toy": {"path": str(model), "template": "chat", "family": "toy"}}
    cfg["rewards"] = {"ground_truth": {"spec": "ground_truth", "labels": "true_labels", "variants": ["clip"]}}
    cfg["grpo"].update(steps=2, save_every=2, prompts_per_rollout=3, group_size=2, mini_batch=6, micro_batch=2,
                       gpus=1, max_prompt_tokens=256)
    cfg = cfgmod.validate(cfg)
    data_path = tmp_path / "train.jsonl"
    data_path.write_text("".join(json.dumps(r) + "\n" for r in _records(5)))
    state = tmp_path / "state"

    def run(c: dict, out: str) -> None:
        spec = cfgmod.run_spec(c, cfgmod.Run("toy", "ground_truth", "clip", 1))
        training.train(spec, data_path=data_path, state_dir=state, out_checkpoints=tmp_path / out / "ck",
                       out_metrics=tmp_path / out / "metrics.jsonl")

    run(cfg, "a")
    assert (state / "openrlhf" / "ckpt").exists()
    cfg["grpo"]["lr"] = 3e-6
    with caplog.at_level("WARNING"):
        run(cfg, "b")
    assert "discarding the state" in caplog.text and "grpo.lr" in caplog.text
    argv = json.loads((state / "openrlhf" / "command.json").read_text())["argv"]
    assert argv[argv.index("--actor.adam.lr") + 1] == "3e-06"
