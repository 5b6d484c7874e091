"""The paper's GPU backend: GRPO with OpenRLHF 0.11.2 (Ray + DeepSpeed ZeRO-3 + vLLM).

The paper trained with a TTRL fork of OpenRLHF 0.6; this backend builds the same run for
OpenRLHF **0.11.2**, whose flags are dotted (``--actor.eps_clip``; the old flat names are
rejected). :func:`build_command` turns the run spec the TRL backend reads into one argv
(every value its own element, never a shell string), and CI parse-checks every command of
``config/paper.yaml`` with OpenRLHF's own parser (tests/test_openrlhf.py).

Where each paper setting goes (docs/paper-setup.md §2, docs/openrlhf.md §1):

=============================  ==========================================================
paper / spec                   OpenRLHF 0.11.2
=============================  ==========================================================
GRPO (group-normalised adv.)   ``--algo.advantage.estimator group_norm`` (default is gae:
                               a critic, i.e. PPO)
group_size G = 16              ``--rollout.n_samples_per_prompt``
prompts_per_rollout = 64       ``--rollout.batch_size`` (one global step = one rollout);
                               a variant's own ``prompts_per_rollout`` wins (rollout 8)
mini_batch = 128 (8 updates)   ``--train.batch_size`` (global), ``--train.max_epochs 1``;
                               ``one_update`` uses the whole rollout (1024): the paper's
                               "Batch Size = 1024" variant, ratio == 1, clip never acts
micro_batch = 4 (per GPU)      ``--train.micro_batch_size``, ``--rollout.micro_batch_size``
steps = 150                    no ``--max_steps`` exists: ``--data.max_samples`` =
                               steps x (the variant's) prompts_per_rollout rows,
                               ``--train.num_episodes 1``
lr 5e-7 constant               ``--actor.adam.lr``, ``--actor.lr_scheduler constant``,
                               ``--actor.lr_warmup_ratio 0`` (default: cosine + warmup)
Adam (0.9, 0.95), wd 0, clip 1 ``--actor.adam.betas``, ``--actor.adam.weight_decay``,
                               ``--actor.max_norm``
KL 0                           ``--algo.kl.init_coef 0``: no reference model is created
                               (the authors still ran one; same result, less compute).
                               kl_coef > 0 adds ``--algo.kl.use_loss --algo.kl.estimator
                               k3``, as the TRL backend's ``beta``
eps 0.2                        ``--actor.eps_clip``; ``no_clip`` = the paper's "clipping
                               disabled in the implementation", approximated by
                               eps = 1e9, which can never bind (the ratio is at most
                               e^20), with the same 8 updates per rollout
loss aggregation               ``--actor.loss_agg_mode``; paper: token-mean (the authors'
                               packed runs: token means of packed micro-batches);
                               seq-mean-token-mean = their non-packed path, never run
advantage whitening            ``grpo.advantage_whitening: batch_token`` (paper): the
                               authors' token-weighted whitening over the rollout after
                               group_norm, patched in (openrlhf_patches.py)
no entropy loss                ``--actor.entropy_coef 0``: entropy logged, not optimised
T = 1.0, top_p = 1.0           ``--rollout.temperature``, ``--rollout.top_p``
prompt 1024 + response 3072    ``--data.max_len`` (= sum; also vLLM's max_model_len) and
                               ``--rollout.max_new_tokens``
ZeRO-3, bf16, grad. ckpt,      ``--ds.zero_stage 3 --ds.param_dtype bf16
packing                        --actor.gradient_checkpointing_enable --ds.packing_samples``
                               (memory/speed only; Adam is not offloaded: with ZeRO-3 over
                               the job's GPUs a 7B model's states fit, and offload needs a
                               JIT-built CPU Adam op)
chat template (Qwen, -Inst.)   ``--data.apply_chat_template`` (one user turn, generation
                               prompt: exactly templates.render_prompt)
r1 template (base Llama/OLMo)  ``--data.input_template`` = templates.R1_TEMPLATE (real
                               newlines, as our evaluation; ``r1_authors``: their literal
                               ``\\n``). OpenRLHF 0.11 has no stop strings: the launcher
                               patches vLLM's ``stop=["</answer>"]`` (kept in the output)
                               into its SamplingParams, as the authors' ``--stop_string``
seed                           ``--train.seed`` (DeepSpeed; vLLM engine i gets seed + i),
                               the order of our pre-shuffled training file, and the
                               prompt loader's shuffle (seeded by the launcher's patch)
checkpoints every 10 steps     ``--ckpt.save_hf --ckpt.save_steps`` = gcd of the
                               checkpoint steps, ``--ckpt.load_enable`` (resume)
8 GPUs (4 actor + 4 vLLM)      ``gpus`` for the actor and vLLM engines (TP 1), colocated
                               (``--train.colocate_all`` with sleeping engines): any GPU
                               count works; the split layout changes throughput only
=============================  ==========================================================

Every command runs OpenRLHF through :mod:`spurious_rewards.training.openrlhf_patches`
(``python -m spurious_rewards.training.openrlhf_patches --spurious.fidelity <json> <OpenRLHF
flags>``), which patches into OpenRLHF's trainer process what 0.11.2 has no flag for: the
stop at ``</answer>`` of r1 runs, the authors' batch whitening of group_norm advantages
(which changes every advantage of a length-correlated reward: with ``none``, the update
is the paper's text, not the authors' runs), and a seeded prompt shuffle (unpatched,
OpenRLHF's prompt loader reshuffles with an unseeded RNG inside its Ray actor).
Remaining deviation: over-long prompts are dropped here, as the TRL backend does,
because OpenRLHF would left-truncate them.
"""

from __future__ import annotations

import ast
import collections
import contextlib
import json
import logging
import math
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from functools import reduce
from pathlib import Path
from typing import Any

from .. import io, templates
from ..config import variant_settings
from . import openrlhf_patches

log = logging.getLogger(__name__)

#: The OpenRLHF release whose flags these are (parse-checked in CI).
OPENRLHF_VERSION = "0.11.2"
#: OpenRLHF's ``python -m`` entry point of Ray PPO/GRPO training (run by the launcher).
ENTRY_POINT = openrlhf_patches.OPENRLHF_ENTRY
#: What ``python -m`` runs: our launcher, which patches OpenRLHF and then runs ENTRY_POINT.
LAUNCHER = openrlhf_patches.LAUNCHER
#: vLLM's share of each GPU while colocated with the (sleeping) DeepSpeed models.
VLLM_GPU_MEMORY_UTILIZATION = 0.5
#: DeepSpeed checkpoints kept for resuming (the newest may be mid-write when a job is killed).
DS_CHECKPOINTS_KEPT = 2
#: Interpreter that runs OpenRLHF, when it is not the one running ``spurious`` (its own env).
PYTHON_ENV = "SPURIOUS_OPENRLHF_PYTHON"
#: Name of the per-run copy of the reward file (its sidecar config is ``reward_func.json``).
REWARD_FILE = "reward_func.py"

_REWARD_SOURCE = Path(__file__).with_name("openrlhf_reward.py")
_STEP_LINE = re.compile(r"Global step (\d+): (\{.*\})\s*$")
_REDACTED = "<redacted>"


# ---------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------


def save_interval(spec: Mapping[str, Any]) -> int:
    """``--ckpt.save_steps``: the gcd of the checkpoint steps, so every one of them is saved.

    OpenRLHF saves when ``step % save_steps == 0`` (the last step only if divisible).
    """
    return reduce(math.gcd, spec["checkpoint_steps"])


def run_name(spec: Mapping[str, Any]) -> str:
    """W&B run name / TensorBoard subfolder: the run path without ``/`` or ``:`` (OpenRLHF's default has ``:``)."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", str(spec["run"])).strip("-") or "run"


def layout(workdir: str | Path) -> dict[str, Path]:
    """Where OpenRLHF writes inside ``workdir`` (all absolute: Ray workers have other cwds)."""
    w = Path(workdir).resolve()
    return {"ckpt": w / "ckpt", "final": w / "final", "tensorboard": w / "tensorboard"}


def rollout_prompts(spec: Mapping[str, Any]) -> int:
    """Prompts per rollout step: the variant's ``prompts_per_rollout`` (the paper's "Rollout
    Size = 8" arm), else ``grpo.prompts_per_rollout``: one rule with config.variant_settings."""
    return variant_settings(spec["grpo"], spec["variant"]).rollout // int(spec["grpo"]["group_size"])


def flag_table(
    spec: Mapping[str, Any],
    *,
    data_file: str | Path,
    reward_file: str | Path,
    state_dir: str | Path,
    gpus: int,
    env: Mapping[str, str] | None = None,
) -> list[tuple[str, Any]]:
    """The run as ordered ``(dotted flag, value)`` pairs (``True`` = a switch, tuple = nargs).

    ``state_dir`` is OpenRLHF's working folder (checkpoints, final model, TensorBoard).
    Raises ValueError when the spec cannot run as asked on ``gpus`` GPUs.
    """
    env = os.environ if env is None else env
    g = spec["grpo"]
    gpus = int(gpus)
    if gpus < 1:
        raise ValueError(f"the openrlhf backend needs at least one GPU (grpo.gpus = {gpus})")
    v = variant_settings(g, spec["variant"])
    rollout, mini, micro = v.rollout, v.mini_batch, v.micro_batch
    prompts = rollout_prompts(spec)
    if mini % (micro * gpus):
        raise ValueError(
            f"grpo.mini_batch {mini} must be a multiple of grpo.micro_batch x GPUs = {micro} x {gpus} "
            "(OpenRLHF accumulates mini_batch // (micro_batch x GPUs) micro-batches)"
        )
    if rollout // micro < gpus:
        raise ValueError(f"a rollout of {rollout} samples in micro-batches of {micro} cannot feed {gpus} GPUs")
    eps = v.epsilon
    paths = layout(state_dir)
    model = spec["model"]

    f: list[tuple[str, Any]] = [
        ("--actor.model_name_or_path", model["path"]),
        # one node; actor (and reference, used only when kl_coef > 0) and vLLM share the GPUs
        ("--actor.num_nodes", 1),
        ("--actor.num_gpus_per_node", gpus),
        ("--ref.num_nodes", 1),
        ("--ref.num_gpus_per_node", gpus),
        ("--vllm.num_engines", gpus),
        ("--vllm.tensor_parallel_size", 1),
        ("--vllm.gpu_memory_utilization", VLLM_GPU_MEMORY_UTILIZATION),
        ("--vllm.sync_backend", "nccl"),
        ("--train.colocate_all", True),
        ("--vllm.enable_sleep", True),
        ("--ds.enable_sleep", True),
        # GRPO
        ("--algo.advantage.estimator", "group_norm"),
        ("--algo.advantage.is_correction_level", "off"),  # old log-probs from the actor, as the paper
        ("--rollout.n_samples_per_prompt", g["group_size"]),
        ("--rollout.batch_size", prompts),
        ("--rollout.micro_batch_size", micro),
        ("--train.batch_size", mini),
        ("--train.micro_batch_size", micro),
        ("--train.max_epochs", 1),
        ("--train.num_episodes", 1),
        ("--data.max_samples", g["steps"] * prompts),
        ("--algo.kl.init_coef", g["kl_coef"]),
    ]
    if g["kl_coef"] > 0:
        f += [("--algo.kl.use_loss", True), ("--algo.kl.estimator", "k3")]
    f += [
        # symmetric: --actor.eps_clip; clip-higher (grpo.epsilon_high): the (low, high) pair
        ("--actor.eps_clip", eps) if v.epsilon_high == eps else ("--actor.eps_clip_low_high", (eps, v.epsilon_high)),
        ("--actor.loss_agg_mode", g["loss_agg"]),
        ("--actor.optim", "adam"),
        ("--actor.adam.lr", g["lr"]),
        ("--actor.lr_scheduler", "constant"),
        ("--actor.lr_warmup_ratio", 0),
        ("--actor.adam.betas", (g["beta1"], g["beta2"])),
        ("--actor.adam.weight_decay", 0.0),
        ("--actor.max_norm", g["max_grad_norm"]),
        ("--actor.entropy_coef", 0.0),  # 0: entropy is logged but not in the loss (paper: none)
        ("--rollout.temperature", g["temperature"]),
        ("--rollout.top_p", g["top_p"]),
        ("--data.max_len", g["max_prompt_tokens"] + g["max_new_tokens"]),
        ("--rollout.max_new_tokens", g["max_new_tokens"]),
        # memory and speed only
        ("--ds.zero_stage", 3),
        ("--ds.param_dtype", "bf16"),
        ("--actor.gradient_checkpointing_enable", True),
        ("--ds.packing_samples", True),
        # data and reward
        ("--data.prompt_dataset", str(Path(data_file).resolve())),
        ("--data.input_key", "prompt"),
        ("--data.label_key", "label"),
    ]
    f += _template_flags(model["template"])
    f += [
        ("--reward.remote_url", str(Path(reward_file).resolve())),
        ("--train.seed", spec["seed"]),
        # checkpoints: HF weights at every checkpoint step, DeepSpeed state for resuming
        ("--ckpt.path", str(paths["ckpt"])),
        ("--ckpt.output_dir", str(paths["final"])),
        ("--ckpt.save_steps", save_interval(spec)),
        ("--ckpt.save_hf", True),
        ("--ckpt.max_num", DS_CHECKPOINTS_KEPT),
        ("--ckpt.best_metric_key", "none"),
        ("--ckpt.load_enable", True),  # resumes only when {ckpt.path}/_actor exists
        # logging; the built-in eval would score with the training reward (meaningless for
        # random/format rewards), so evaluation is our own stage over the HF checkpoints
        ("--logger.logging_steps", 1),
        ("--logger.tensorboard_dir", str(paths["tensorboard"])),
        ("--logger.wandb.run_name", run_name(spec)),
    ]
    if env.get("WANDB_API_KEY"):
        f += [("--logger.wandb.key", env["WANDB_API_KEY"]), ("--logger.wandb.project", "spurious-rewards")]
    f += [("--eval.steps", -1)]
    return f


def _template_flags(template: str) -> list[tuple[str, Any]]:
    if template == "chat":
        return [("--data.apply_chat_template", True)]
    if templates.is_r1(template):
        # OpenRLHF calls input_template.format(problem): the template may hold no other braces
        tpl = templates.R1_TEMPLATE if template == "r1" else templates.R1_AUTHORS_TEMPLATE
        if tpl.count("{") != 1 or tpl.count("}") != 1 or "{}" not in tpl:
            raise ValueError("templates.R1_TEMPLATE must contain exactly one '{}' and no other braces")
        return [("--data.input_template", tpl)]
    if template == "plain":
        return []
    raise ValueError(f"unknown prompt template {template!r}; allowed: {', '.join(templates.TEMPLATES)}")


def _fmt(value: Any) -> str:
    if isinstance(value, bool):  # pragma: no cover - switches never get here
        raise TypeError("switches have no value")
    if isinstance(value, float):
        return repr(value)  # shortest round-trip form: 5e-07, 1000000000.0
    return str(value)


def argv_from_flags(flags: Iterable[tuple[str, Any]]) -> list[str]:
    """Flags to argv: one element per value; a string value that starts with ``-`` is joined
    as ``--flag=value`` so argparse cannot take it for an option."""
    argv: list[str] = []
    for flag, value in flags:
        if value is True:
            argv.append(flag)
        elif value is False or value is None:
            continue
        elif isinstance(value, (tuple, list)):
            argv += [flag, *(_fmt(v) for v in value)]
        elif isinstance(value, str) and value.startswith("-"):
            argv.append(f"{flag}={value}")
        else:
            argv += [flag, _fmt(value)]
    return argv


def build_command(
    spec: Mapping[str, Any],
    *,
    data_file: str | Path,
    reward_file: str | Path,
    state_dir: str | Path,
    gpus: int,
    python: str = "python",
    env: Mapping[str, str] | None = None,
) -> list[str]:
    """``python -m spurious_rewards.training.openrlhf_patches --spurious.fidelity <json> <OpenRLHF flags>`` for one run.

    W&B logging is added only when ``WANDB_API_KEY`` is set in ``env`` (default: os.environ).
    """
    flags = flag_table(spec, data_file=data_file, reward_file=reward_file, state_dir=state_dir, gpus=gpus, env=env)
    options = json.dumps(openrlhf_patches.fidelity_options(spec), sort_keys=True)
    return [python, "-m", LAUNCHER, openrlhf_patches.FLAG, options, *argv_from_flags(flags)]


def redact(cmd: Sequence[str]) -> list[str]:
    """The command with the W&B key hidden (for logs and the recorded command)."""
    out = list(cmd)
    for i, a in enumerate(out):
        if a == "--logger.wandb.key" and i + 1 < len(out):
            out[i + 1] = _REDACTED
        elif a.startswith("--logger.wandb.key="):
            out[i] = "--logger.wandb.key=" + _REDACTED
    return out


# ---------------------------------------------------------------------------
# inputs: the training file and the reward file
# ---------------------------------------------------------------------------


def shuffle_training_file(
    records: Sequence[Mapping[str, Any]], seed: int, out: str | Path, n_rows: int | None = None
) -> int:
    """Write the training JSONL in an order fixed by ``seed``; return the number of rows.

    Why: OpenRLHF takes the first ``--data.max_samples`` rows, and its own shuffle ignores
    ``--train.seed``, so the seed must act on the file. ``n_rows`` (default: one pass)
    longer than the data repeats it in fresh seeded permutations, so a small set (the
    one-shot example) still fills every step. Each row is ``{"prompt", "label", "id"}``;
    ``label`` is a JSON string ``{"answer", "true_answer", "id"}`` read by the reward file.
    """
    if not records:
        raise ValueError("no training records")
    n_rows = len(records) if n_rows is None else int(n_rows)
    rng = random.Random(int(seed))
    rows: list[dict[str, Any]] = []
    while len(rows) < n_rows:
        order = list(range(len(records)))
        rng.shuffle(order)
        for i in order[: n_rows - len(rows)]:
            rec = records[i]
            label = {
                "answer": rec.get("answer"),
                "true_answer": rec.get("true_answer", rec.get("answer")),
                "id": str(rec.get("id", i)),
            }
            rows.append({"prompt": rec["prompt"], "label": json.dumps(label, ensure_ascii=False),
                         "id": label["id"]})
    io.write_jsonl(rows, out)
    return len(rows)


def reward_config(spec: Mapping[str, Any], gpus: int = 1) -> dict[str, Any]:
    """What the reward file needs (its sidecar JSON).

    ``grading_workers`` caps the math-verify subprocesses of each vLLM engine (one engine
    per GPU, each grading from up to 32 threads): the node's cores shared between engines.
    """
    cores = os.cpu_count() or 8
    return {
        "run": spec["run"],
        "reward": spec["reward"]["spec"],
        "seed": int(spec["seed"]),
        "r1": templates.is_r1(spec["model"]["template"]),
        "empty_label": spec["reward"].get("empty_label", "zero"),
        "grading_workers": max(2, cores // max(1, int(gpus)) // 2),
    }


def write_reward_file(spec: Mapping[str, Any], directory: str | Path, gpus: int = 1) -> Path:
    """Copy the reward adapter to ``directory/reward_func.py`` with its sidecar config.

    A per-run copy, because the sidecar sits next to the file OpenRLHF loads and
    concurrent runs must not share one (openrlhf_reward.py says why a sidecar).
    """
    d = Path(directory).resolve()
    d.mkdir(parents=True, exist_ok=True)
    target = d / REWARD_FILE
    io.write_json(reward_config(spec, gpus), target.with_suffix(".json"))
    with io.atomic_output(target) as tmp:
        shutil.copyfile(_REWARD_SOURCE, tmp)
    return target


def read_training_records(path: str | Path) -> list[dict[str, Any]]:
    """Training records: ``id``, ``prompt``, ``answer`` and, in label files, ``true_answer``."""
    rows = []
    for n, rec in enumerate(io.iter_jsonl(path), 1):
        if not isinstance(rec, dict) or not isinstance(rec.get("prompt"), str) or "answer" not in rec:
            raise io.DataError(path, "expected an object with 'prompt' and 'answer'", line=n)
        rows.append(rec)
    if not rows:
        raise io.DataError(path, "no records (empty file)")
    return rows


def _eligible_records(spec: Mapping[str, Any], records: list[dict]) -> list[dict]:
    """Drop prompts longer than ``max_prompt_tokens`` after templating, as the TRL backend does."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec["model"]["path"])
    limit = spec["grpo"]["max_prompt_tokens"]
    keep = [
        r for r in records
        if len(tok(templates.render_prompt(tok, spec["model"]["template"], r["prompt"]),
                   add_special_tokens=False)["input_ids"]) <= limit
    ]
    if not keep:
        raise ValueError(f"no prompt fits grpo.max_prompt_tokens={limit}")
    if len(keep) < len(records):
        log.warning("dropped %d prompts longer than %d tokens", len(records) - len(keep), limit)
    return keep


# ---------------------------------------------------------------------------
# outputs: step logs -> metrics rows, checkpoints -> hf/step_N
# ---------------------------------------------------------------------------

_NUMPY_SCALAR = re.compile(r"\b(?:np|numpy)\.\w+\(([^()]*)\)")
_TENSOR = re.compile(r"\btensor\(([^()]*?)(?:,\s*\w+=[^()]*)?\)")
_NONFINITE = re.compile(r"(?<![\w'\"])-?(?:nan|inf)(?![\w'\"])")


def parse_step_line(line: str) -> tuple[int, dict[str, Any]] | None:
    """``(step, logged dict)`` from OpenRLHF's ``✨ Global step N: {...}`` stdout line, else None.

    The dict is Python's repr; numpy/torch scalars and nan/inf are turned into plain
    literals (nan/inf -> None) before ``ast.literal_eval``. A line that still does not
    parse is skipped (logged), never fatal.
    """
    m = _STEP_LINE.search(line)
    if not m:
        return None
    text = _NUMPY_SCALAR.sub(r"\1", m.group(2))
    text = _TENSOR.sub(r"\1", text)
    text = _NONFINITE.sub("None", text)
    try:
        logged = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        log.warning("could not parse OpenRLHF step line: %.200s", line)
        return None
    if not isinstance(logged, dict):
        return None
    return int(m.group(1)), logged


#: Our metric names for OpenRLHF's keys (the TRL backend's row names), besides the raw keys.
#: Only same-meaning keys: ``ppo_kl`` (policy vs old policy) is not the reference KL ``kl``,
#: nor ``group_reward_std`` (mean within-group std) the step's ``reward_std``.
ALIASES: dict[str, tuple[str, ...]] = {
    "reward_mean": ("reward", "rollout/reward_mean"),
    "reward_std": ("rollout/reward_std",),
    "clip_fraction": ("ppo_clip_ratio",),
    "kl": ("kl",),
    "response_length": ("response_length", "rollout/response_length_mean"),
    "grad_norm": ("actor_grad_norm",),
    "entropy": ("entropy_loss",),
    "loss": ("policy_loss",),
    "step_time": ("timing/step_total",),
}


def metrics_row(step: int, logged: Mapping[str, Any]) -> dict[str, Any]:
    """One metrics.jsonl row: OpenRLHF's scalars as logged plus our names for the main ones."""
    row: dict[str, Any] = {"step": int(step)}
    for k, v in logged.items():
        if k == "generated_samples":
            continue
        if isinstance(v, bool) or v is None or isinstance(v, (int, float, str)):
            row[str(k)] = v
    for ours, theirs in ALIASES.items():
        for k in theirs:
            if isinstance(row.get(k), (int, float)) and not isinstance(row.get(k), bool):
                row.setdefault(ours, row[k])
                break
    return row


def read_tensorboard(tb_dir: str | Path) -> dict[int, dict[str, Any]]:
    """``{step: {key: value}}`` from OpenRLHF's ``train/*`` scalars; {} without ``tensorboard``."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError:
        return {}
    out: dict[int, dict[str, Any]] = {}
    for events in sorted(Path(tb_dir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            if not tag.startswith("train/"):
                continue
            for ev in acc.Scalars(tag):
                out.setdefault(int(ev.step), {})[tag[len("train/") :]] = float(ev.value)
    return out


class StepLog:
    """Parsed step rows, kept in ``steps.jsonl`` so a resumed run keeps the rows of the steps before it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.rows: dict[int, dict] = {}
        if path.exists():
            for line in path.read_text().splitlines():
                with contextlib.suppress(ValueError):
                    r = json.loads(line)
                    self.rows[int(r["step"])] = r

    def add(self, row: dict) -> None:
        self.rows[row["step"]] = row  # a step re-run after a resume replaces the old row
        with open(self.path, "a") as fh:
            fh.write(json.dumps(row, sort_keys=True) + "\n")
            fh.flush()


def collect_checkpoints(spec: Mapping[str, Any], ckpt_dir: Path, hf_dir: Path) -> list[int]:
    """Move ``{ckpt}/global_step{N}_hf`` to ``hf/step_N`` for every checkpoint step; return those missing."""
    missing = []
    for step in spec["checkpoint_steps"]:
        target = hf_dir / f"step_{step}"
        if target.is_dir():
            continue
        src = ckpt_dir / f"global_step{step}_hf"
        if not src.is_dir():
            missing.append(step)
            continue
        with io.atomic_output(target) as tmp:
            shutil.move(str(src), tmp)
        _ensure_tokenizer(spec, target)
    return missing


#: prompts the p_code probe reads (the TRL backend probes the same first 64 training prompts)
PROBE_PROMPTS = 64


def complete_rows(spec: Mapping[str, Any], records: Sequence[Mapping[str, Any]], hf_dir: Path,
                  rows: list[dict]) -> list[dict]:
    """OpenRLHF's rows completed to the shared metrics row (``training.common.MetricsRow``).

    OpenRLHF logs the reward, accuracy and code frequency (our reward file's extra logs) and
    the clip ratio at every step, but cannot run our logit probe inside its Ray actors. So
    ``p_code`` is measured here, after the run, on the base model (a step-0 row, as the TRL
    backend writes) and on every saved checkpoint; steps without a checkpoint get None.
    """
    from .. import probes
    from .common import METRICS_KEYS

    steps = [s for s in spec["checkpoint_steps"] if (hf_dir / f"step_{s}").is_dir()]
    measured = _p_codes(spec, records, {0: spec["model"]["path"], **{s: hf_dir / f"step_{s}" for s in steps}},
                        probes)
    out = [{"step": 0, "p_code": measured.get(0), "wall_time": 0.0}]
    for row in rows:
        row = dict(row)
        row["p_code"] = measured.get(row["step"])
        for key in METRICS_KEYS:
            row.setdefault(key, None)
        out.append(row)
    return out


def _p_codes(spec: Mapping[str, Any], records: Sequence[Mapping[str, Any]], models: Mapping[int, Any],
             probes: Any) -> dict[int, float]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spec["model"]["path"])
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    prompts = [templates.render_prompt(tok, spec["model"]["template"], r["prompt"])
               for r in list(records)[:PROBE_PROMPTS]]
    cuda = torch.cuda.is_available()
    ids = probes.code_token_ids(tok)  # one vocabulary scan for every checkpoint
    out: dict[int, float] = {}
    for step, path in models.items():
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16 if cuda else torch.float32)
        model.to("cuda" if cuda else "cpu").eval()
        probs = probes.first_token_code_probability(model, tok, prompts, code_ids=ids)
        out[step] = sum(probs) / len(probs) if probs else float("nan")
        del model
        if cuda:
            torch.cuda.empty_cache()
    return out


def _ensure_tokenizer(spec: Mapping[str, Any], target: Path) -> None:
    """Evaluation loads the tokenizer from the checkpoint; copy the base model's if OpenRLHF left none."""
    if (target / "tokenizer_config.json").exists():
        return
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(spec["model"]["path"]).save_pretrained(target)


# ---------------------------------------------------------------------------
# the backend
# ---------------------------------------------------------------------------


def _gpus(spec: Mapping[str, Any]) -> int:
    n = int(spec["grpo"].get("gpus") or 0)
    if n:
        return n
    with contextlib.suppress(Exception):
        import torch

        return int(torch.cuda.device_count())
    return 0


class _Terminated(BaseException):
    """SIGTERM (Snakemake or SLURM cancelling the job), turned into an exception to clean up."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise _Terminated(signum)


def run_streaming(cmd: Sequence[str], *, env: Mapping[str, str], cwd: Path,
                  on_line: Any = None) -> tuple[int, list[str]]:
    """Run ``cmd``, copying its output to our stdout (the job log) line by line.

    Returns (exit status, last 40 lines). The child runs in its own session; if we are
    interrupted or terminated, its whole process group (the Ray driver and what it
    started) gets SIGTERM, then SIGKILL after 30 s, so no orphan keeps the GPUs.
    """
    tail: collections.deque[str] = collections.deque(maxlen=40)
    main = threading.current_thread() is threading.main_thread()
    old = signal.signal(signal.SIGTERM, _raise_terminated) if main else None
    proc = subprocess.Popen(list(cmd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            errors="replace", bufsize=1, env=dict(env), cwd=cwd, start_new_session=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            sys.stdout.flush()
            tail.append(line)
            if on_line is not None:
                on_line(line)
        return proc.wait(), list(tail)
    except BaseException:
        _stop_group(proc)
        raise
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
        if main:
            signal.signal(signal.SIGTERM, old)


def _stop_group(proc: subprocess.Popen) -> None:
    for sig, wait in ((signal.SIGTERM, 30.0), (signal.SIGKILL, 10.0)):
        if proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(wait)


def train_openrlhf(spec: dict, *, data_path: Path, state_dir: Path) -> None:
    """Run one GRPO job with OpenRLHF; leave ``state_dir/hf/step_N`` and ``state_dir/metrics.jsonl``.

    Rerunning after a kill resumes from OpenRLHF's newest DeepSpeed checkpoint
    (``--ckpt.load_enable``); the data file is rewritten identically (same seed).
    """
    state_dir = Path(state_dir).resolve()
    work = state_dir / "openrlhf"
    work.mkdir(parents=True, exist_ok=True)
    g = spec["grpo"]

    records = _eligible_records(spec, read_training_records(data_path))
    data_file = work / "train.jsonl"
    shuffle_training_file(records, spec["seed"], data_file, n_rows=g["steps"] * rollout_prompts(spec))
    gpus = _gpus(spec)
    reward_file = write_reward_file(spec, work / "reward", gpus)

    python = os.environ.get(PYTHON_ENV) or sys.executable
    cmd = build_command(spec, data_file=data_file, reward_file=reward_file, state_dir=work, gpus=gpus,
                        python=python)
    io.write_json({"openrlhf": OPENRLHF_VERSION, "argv": redact(cmd)}, work / "command.json")
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    # the reward file finds its config in its sidecar; the variable is a fallback for Ray workers
    env["SPURIOUS_OPENRLHF_REWARD"] = json.dumps(reward_config(spec, gpus))
    log.info("running %s", " ".join(redact(cmd)))

    steps = StepLog(work / "steps.jsonl")
    # wall time keeps counting across restarts (a resumed run adds to the time already spent)
    t0 = time.time() - max((r.get("wall_time") or 0.0 for r in steps.rows.values()), default=0.0)

    def on_line(line: str) -> None:
        parsed = parse_step_line(line)
        if parsed:
            row = metrics_row(*parsed)
            row["wall_time"] = round(time.time() - t0, 3)
            steps.add(row)

    rc, tail = run_streaming(cmd, env=env, cwd=work, on_line=on_line)
    if rc != 0:
        raise RuntimeError(f"OpenRLHF exited with status {rc}; last output:\n{''.join(tail)}")

    rows = steps.rows
    if not rows:  # stdout format changed? fall back to TensorBoard
        rows = {s: metrics_row(s, v) for s, v in read_tensorboard(layout(work)["tensorboard"]).items()}
    final = [rows[s] for s in sorted(rows) if s <= g["steps"]]
    broken = [r["step"] for r in final if (r.get("reward_failures") or 0) >= 1.0]
    if broken:
        raise RuntimeError(f"every reward call failed at steps {broken}; see the log (reward_func)")
    if any(r.get("reward_failures") for r in final):
        log.warning("some reward calls failed (scored 0): %s",
                    {r["step"]: r["reward_failures"] for r in final if r.get("reward_failures")})
    missing = collect_checkpoints(spec, layout(work)["ckpt"], state_dir / "hf")
    if missing:
        raise RuntimeError(f"OpenRLHF finished without HF checkpoints for steps {missing} in {layout(work)['ckpt']}")
    final = complete_rows(spec, records, state_dir / "hf", final)
    with io.atomic_output(state_dir / "metrics.jsonl") as tmp:
        Path(tmp).write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in final))
