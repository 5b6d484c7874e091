"""The TRL backend: GRPO with TRL's ``GRPOTrainer`` on CPU or one GPU.

Every backend writes the same outputs (``training.common``), so evaluation needs no special case:

* ``<out_checkpoints>/step_N/``: Hugging Face checkpoints at the configured
  rollout steps (the last step always), published only when the run completes;
* ``<out_metrics>``: one JSON line per rollout step (reward mean/std, accuracy
  against the true answer, clip fraction, entropy, response length, code
  frequency of the rollouts, P(opening a code block), wall time).

The resumable state (optimizer, RNG, data position) lives in ``state_dir``,
which Snakemake does not delete, so a killed job restarts from its last
checkpoint and ends at the same step count with the same numbers.

How the paper's OpenRLHF setup maps onto TRL's ``GRPOConfig`` (and where it differs):

* one **rollout step** = ``prompts_per_rollout`` prompts × ``group_size``
  samples = ``generation_batch_size``; it feeds ``updates_per_rollout``
  optimizer updates of ``mini_batch`` responses each (TRL ``steps_per_generation``
  = rollout / micro_batch micro-steps, ``gradient_accumulation_steps`` =
  mini_batch / micro_batch), each response used once (``num_iterations=1``,
  OpenRLHF ``max_epochs 1``). Updates 2..k are off-policy, so the ratio leaves
  1 and clipping can act. TRL counts optimizer updates as steps; we convert.
* clipping: ``epsilon=epsilon_high=eps``; ``no_clip`` uses 1e9, which can never
  bind, with the same updates; ``one_update`` sets mini_batch = rollout so TRL
  computes no old log-probs and the ratio is exactly 1.
* advantages: (r - mean_g) / (std_g + eps) per group (``scale_rewards="group"``).
  TRL uses eps 1e-4 (OpenRLHF 1e-9). ``grpo.advantage_whitening: batch_token`` then
  whitens them across the rollout, token-weighted, as the authors' fork did
  (:class:`trl_extensions.FidelityGRPOTrainer`; plain TRL, like OpenRLHF 0.11, does not).
* loss aggregation: ``seq-mean-token-mean`` -> TRL ``grpo``; ``token-mean`` ->
  TRL ``dapo``: the mini-batch's token sum over the rollout's mean tokens per
  mini-batch, so every token of an update weighs the same (``bnpo`` would instead
  average per-micro-batch token means, which depends on the micro batch, a memory
  setting).
* rewards: the spec's terms through :mod:`spurious_rewards.scoring.rewards`, with a
  :class:`~spurious_rewards.scoring.rewards.RewardContext` per response (seed, prompt id,
  rollout step, sample index, r1, and ``empty_label`` from ``labelling.empty_majority``).
* KL: ``beta = kl_coef`` (paper 0: no reference model is loaded).
* constant lr, no warmup; Adam betas from config (paper 0.9/0.95); grad-norm clip.
* sampling at ``temperature``/``top_p``; r1-template runs stop at the first
  ``</answer>`` (kept) and their completion mask ends there
  (:class:`trl_extensions.FidelityGRPOTrainer`), as the authors' vLLM ``stop``.
* CPU: fp32, ``use_cpu``, no bf16 (GRPOConfig defaults bf16 to True).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import data, io
from ..config import variant_settings
from ..probes import p_code
from .common import MetricsLog

if TYPE_CHECKING:
    from ..scoring.rewards import RewardContext

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------
# the TRL backend
# ---------------------------------------------------------------------------


def trl_config_kwargs(spec: dict, output_dir: str) -> dict[str, Any]:
    """Our GRPO settings as ``GRPOConfig`` keyword arguments (pure, so it is unit-tested)."""
    g = spec["grpo"]
    v = variant_settings(g, spec["variant"])
    rollout, mini, micro, updates = v.rollout, v.mini_batch, v.micro_batch, v.updates
    return {
        "output_dir": output_dir,
        "seed": spec["seed"],
        "data_seed": spec["seed"],
        "max_steps": g["steps"] * updates,
        "per_device_train_batch_size": micro,
        "gradient_accumulation_steps": mini // micro,
        "steps_per_generation": rollout // micro,
        "num_iterations": 1,
        "num_generations": g["group_size"],
        "max_completion_length": g["max_new_tokens"],
        "temperature": g["temperature"],
        "top_p": g["top_p"],
        "top_k": 0,
        "epsilon": v.epsilon,
        "epsilon_high": v.epsilon_high,
        "beta": g["kl_coef"],
        "loss_type": {"seq-mean-token-mean": "grpo", "token-mean": "dapo"}[g["loss_agg"]],
        "scale_rewards": "group",
        "learning_rate": g["lr"],
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
        "adam_beta1": g["beta1"],
        "adam_beta2": g["beta2"],
        "weight_decay": 0.0,
        "max_grad_norm": g["max_grad_norm"],
        "logging_steps": 1,
        "save_strategy": "no",  # our callback decides when to save (rollout boundaries)
        "save_total_limit": 1,
        "disable_tqdm": True,
        "shuffle_dataset": True,
        "remove_unused_columns": False,
        "log_completions": False,
        "dataloader_num_workers": 0,
        **device_kwargs(g, gpu=_has_gpu(), vllm=_has_vllm()),
        **logging_kwargs(spec, output_dir, env=os.environ),
    }


def reward_context(spec: dict, *, prompt_id: str, step: int, sample_index: int, r1: bool) -> RewardContext:
    """The reward context of one response of a rollout step.

    The random stream depends on (seed, prompt, rollout step, sample), never on the model,
    so clip and no_clip runs with one seed see the same draws; ``empty_label`` is
    ``labelling.empty_majority``'s rule for empty labels (``config.run_spec``; absent = zero).
    """
    from ..scoring.rewards import RewardContext

    return RewardContext(seed=int(spec["seed"]), prompt_id=f"{prompt_id}@{step}", sample_index=sample_index, r1=r1,
                         empty_label=spec["reward"].get("empty_label", "zero"))


def device_kwargs(g: dict, *, gpu: bool, vllm: bool) -> dict[str, Any]:
    """Precision, gradient checkpointing and rollout engine for one device (pure: unit-tested).

    On CPU everything stays fp32 with HF generation, whatever the config says, so the
    organisms' numbers never depend on it. On one GPU: bf16 when asked (TRL's mixed
    precision, weights loaded in bf16), gradient checkpointing when asked, and TRL's vLLM
    colocate mode (the policy and a sleeping vLLM engine on the same GPU) when vLLM is there.
    """
    bf16 = gpu and g.get("precision", "fp32") == "bf16"
    out: dict[str, Any] = {
        "use_cpu": not gpu,
        "bf16": bf16,
        "gradient_checkpointing": bool(gpu and g.get("gradient_checkpointing", False)),
        "model_init_kwargs": {"dtype": "bfloat16" if bf16 else "float32"},
        "use_vllm": bool(gpu and vllm and g.get("trl_vllm", "auto") == "auto"),
    }
    if out["use_vllm"]:
        out.update(vllm_mode="colocate", vllm_gpu_memory_utilization=float(g.get("trl_vllm_memory", 0.3)),
                   vllm_enable_sleep_mode=True)
    return out


def logging_kwargs(spec: dict, output_dir: str, env: Any) -> dict[str, Any]:
    """Live training curves: TensorBoard when it is installed (``state/tensorboard``, see
    :func:`train_trl`), W&B when ``WANDB_API_KEY`` is set and wandb is installed."""
    import importlib.util

    report = []
    if importlib.util.find_spec("tensorboard") is not None:
        report.append("tensorboard")
    if env.get("WANDB_API_KEY") and importlib.util.find_spec("wandb") is not None:
        report.append("wandb")
    return {"report_to": report or "none", "run_name": str(spec["run"]).replace("/", "-")}


def _has_vllm() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def _has_gpu() -> bool:
    import torch

    return torch.cuda.is_available()


def _latest_checkpoint(trl_dir: Path) -> Path | None:
    ckpts = sorted(trl_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    complete = [c for c in ckpts if (c / "trainer_state.json").exists()]
    return complete[-1] if complete else None


def train_trl(spec: dict, *, data_path: Path, state_dir: Path) -> None:
    """GRPO with TRL's ``GRPOTrainer`` (CPU or one GPU)."""
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig

    from .. import templates
    from ..scoring import rewards
    from ..scoring.style import is_code
    from .trl_extensions import FidelityGRPOTrainer

    state_dir.mkdir(parents=True, exist_ok=True)
    trl_dir = state_dir / "trl"
    # TensorBoard curves beside the state (`tensorboard --logdir results/train`), as OpenRLHF writes them
    os.environ.setdefault("TENSORBOARD_LOGGING_DIR", str(state_dir / "tensorboard"))
    hf_dir = state_dir / "hf"
    kwargs = trl_config_kwargs(spec, str(trl_dir))
    updates = kwargs["max_steps"] // spec["grpo"]["steps"]
    steps_to_save = set(spec["checkpoint_steps"])
    model_path = spec["model"]["path"]
    template = spec["model"]["template"]
    r1 = templates.is_r1(template)

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"

    records = data.load_records(data_path)
    max_prompt = spec["grpo"]["max_prompt_tokens"]
    rows, dropped = [], 0
    for rec in records:
        prompt = templates.render_prompt(tokenizer, template, rec["prompt"])
        if len(tokenizer(prompt, add_special_tokens=False)["input_ids"]) > max_prompt:
            dropped += 1
            continue
        rows.append({"prompt": prompt, "label": rec["answer"], "true_answer": rec.get("true_answer", rec["answer"]),
                     "pid": rec["id"]})
    if not rows:
        raise ValueError(f"{data_path}: no prompt fits grpo.max_prompt_tokens={max_prompt}")
    if dropped:
        log.warning("dropped %d prompts longer than %d tokens", dropped, max_prompt)
    dataset = Dataset.from_list(rows)
    probe_prompts = [r["prompt"] for r in rows[:64]]

    reward_fn = rewards.parse_reward(spec["reward"]["spec"])
    truth_fn = rewards.parse_reward("ground_truth")
    rollout_stats: dict[int, dict] = {}

    def reward_func(prompts, completions, label, true_answer, pid, trainer_state=None, **_):
        step = (trainer_state.global_step // updates) + 1 if trainer_state is not None else 0
        counts: dict[str, int] = {}
        out, correct, code = [], [], []
        for resp, lab, truth, p in zip(completions, label, true_answer, pid, strict=True):
            idx = counts.get(p, 0)
            counts[p] = idx + 1
            ctx = reward_context(spec, prompt_id=p, step=step, sample_index=idx, r1=r1)
            out.append(reward_fn(resp, lab, ctx))
            # accuracy is against the true answer: an empty one never counts as solved
            correct.append(truth_fn(resp, truth, dataclasses.replace(ctx, empty_label="zero")))
            code.append(float(is_code(resp)))
        n = len(out)
        mean = sum(out) / n
        rollout_stats[step] = {
            "reward_mean": mean,
            "reward_std": math.sqrt(sum((x - mean) ** 2 for x in out) / n),
            "accuracy": sum(correct) / n,
            "code_frequency": sum(code) / n,
            "accuracy_code": _ratio(correct, code, True),
            "accuracy_language": _ratio(correct, code, False),
        }
        return out

    reward_func.__name__ = spec["reward"]["name"]

    resume = _latest_checkpoint(trl_dir)
    resume_step = -1
    if resume is not None:
        resume_step = int(resume.name.split("-")[1]) // updates
        log.info("resuming %s from %s (rollout step %d)", spec["run"], resume, resume_step)
        _export_from_checkpoint(resume, hf_dir / f"step_{resume_step}", tokenizer)
    metrics = MetricsLog(state_dir / "metrics.jsonl", resume_step)

    class RolloutCallback(TrainerCallback):
        """Rolls TRL's per-update logs up into one row per rollout step, and saves at rollout boundaries."""

        def __init__(self) -> None:
            self.updates: list[dict] = []
            self.t0 = time.time()

        def on_train_begin(self, args, state, control, model=None, **kw):
            if resume is None:
                metrics.append({"step": 0, "p_code": p_code(model, tokenizer, probe_prompts),
                                "wall_time": 0.0})
            self.t0 = time.time()

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.updates.append(dict(logs))

        def on_step_end(self, args, state, control, **kw):
            if state.global_step % updates == 0 and state.global_step // updates in steps_to_save:
                control.should_save = True

        def on_save(self, args, state, control, model=None, **kw):
            step = state.global_step // updates
            target = hf_dir / f"step_{step}"
            if not target.exists():
                with io.atomic_output(target) as tmp:
                    model.save_pretrained(tmp, safe_serialization=True)
                    tokenizer.save_pretrained(tmp)

    class RowCallback(TrainerCallback):
        """Writes the metrics row after TRL has logged the step (on_log fires after on_step_end)."""

        def __init__(self, roll: RolloutCallback) -> None:
            self.roll = roll

        def on_log(self, args, state, control, logs=None, model=None, **kw):
            if state.global_step % updates or not logs or "loss" not in logs:
                return
            step = state.global_step // updates
            ups = self.roll.updates[-updates:]
            self.roll.updates = []
            row = {"step": step, **rollout_stats.pop(step, {})}
            row["clip_fraction"] = _mean(u.get("clip_ratio/region_mean") for u in ups)
            row["clip_fraction_low"] = _mean(u.get("clip_ratio/low_mean") for u in ups)
            row["clip_fraction_high"] = _mean(u.get("clip_ratio/high_mean") for u in ups)
            row["entropy"] = _mean(u.get("entropy") for u in ups)
            row["kl"] = _mean(u.get("kl") for u in ups)
            row["response_length"] = _mean(u.get("completions/mean_length") for u in ups)
            if r1:
                row["stopped_ratio"] = _mean(u.get("completions/stopped_ratio") for u in ups)
            row["grad_norm"] = _mean(u.get("grad_norm") for u in ups)
            row["loss"] = _mean(u.get("loss") for u in ups)
            row["p_code"] = p_code(model, tokenizer, probe_prompts)
            row["updates"] = len(ups)
            row["wall_time"] = round(time.time() - self.roll.t0, 3)
            metrics.append(row)

    roll = RolloutCallback()
    trainer = FidelityGRPOTrainer(
        stop_strings=templates.stop_strings(template) if r1 else (),
        advantage_whitening=spec["grpo"].get("advantage_whitening", "none"),
        model=model_path,
        reward_funcs=[reward_func],
        args=GRPOConfig(**kwargs),
        train_dataset=dataset,
        processing_class=tokenizer,
        callbacks=[roll, RowCallback(roll)],
    )
    torch.manual_seed(spec["seed"])
    trainer.train(resume_from_checkpoint=str(resume) if resume else None)


def _export_from_checkpoint(checkpoint: Path, target: Path, tokenizer) -> None:
    """Recreate a step's HF export from TRL's checkpoint (a kill can fall between the two saves)."""
    if target.exists():
        return
    from transformers import AutoModelForCausalLM

    with io.atomic_output(target) as tmp:
        AutoModelForCausalLM.from_pretrained(checkpoint).save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


def _mean(values) -> float | None:
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return sum(vals) / len(vals) if vals else None


def _ratio(correct: list[float], code: list[float], want_code: bool) -> float | None:
    sel = [c for c, k in zip(correct, code, strict=True) if bool(k) == want_code]
    return sum(sel) / len(sel) if sel else None
