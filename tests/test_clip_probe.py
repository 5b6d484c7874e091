"""The clipping-bias probe (``clip_probe``): the paired design, micro-batching and the style measure,
on the shipped toy organism.

The helpers ``_bench_file`` and ``_probe_spec`` are local to this module (``test_audit.py`` has
its own copies); they can move to ``tests/conftest.py`` when that exists.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from spurious_rewards import clip_probe, io

ROOT = Path(__file__).resolve().parents[1]
ORGANISM = ROOT / "workflow/resources/organisms/toy-qwen-math"

CLIP = {"clip": True, "one_update": False}
NO_CLIP = {"clip": False, "one_update": False}


def _bench_file(tmp_path: Path, n: int, seed: int) -> Path:
    from spurious_rewards import synthetic

    path = tmp_path / f"bench{seed}.jsonl"
    io.write_jsonl([p.record("arith") for p in synthetic.generate(n, seed, split="test")], path)
    return path


def _probe_spec(tmp_path: Path, variants: dict, *, draws: int = 3, lr: float = 1e-2, **probe) -> dict:
    train, bench = _bench_file(tmp_path, 12, 7), _bench_file(tmp_path, 4, 8)
    return {
        "model": {"name": "toy", "path": str(ORGANISM), "template": "chat"},
        "train_data": str(train),
        "benchmark": {"name": "arith", "samples": 1, "temperature": 1.0, "top_p": 1.0, "data": str(bench)},
        "grpo": {"group_size": 4, "mini_batch": 4, "micro_batch": 4, "epsilon": 0.2, "temperature": 1.0,
                 "top_p": 1.0, "max_new_tokens": 24, "max_prompt_tokens": 64, "beta1": 0.9, "beta2": 0.95,
                 "max_grad_norm": 1.0},
        "probe": {"draws": draws, "reward_p": 0.5, "prompts_per_rollout": 4, "lr": lr, "eval_problems": 4,
                  "eval_samples": 2, "seed": 0, **probe},
        "variants": variants,
        "max_new_tokens": 24,
        "alpha": 0.05,
    }


def _rows(out: dict, variant: str) -> list[dict]:
    return sorted((r for r in out["draws"] if r["variant"] == variant), key=lambda r: r["draw"])


def test_every_draw_comes_from_the_base_model_whatever_the_variant_list(tmp_path):
    """Each variant's result per draw depends neither on the other variants nor on their order.

    Every draw is sampled from the frozen base model and every variant steps from the
    base weights, so ``no_clip`` alone, ``[clip, no_clip]`` and ``[no_clip, clip]`` give
    the same ``no_clip`` rows (and the two lists the same ``clip`` rows), draw by draw.
    Three draws, so that a draw sampled from the previous draw's stepped model would show.
    """
    runs = {
        name: clip_probe.probe(_probe_spec(tmp_path, variants), model_dir=ORGANISM, out=tmp_path / f"{name}.json")
        for name, variants in {
            "clip_first": {"clip": CLIP, "no_clip": NO_CLIP},
            "no_clip_first": {"no_clip": NO_CLIP, "clip": CLIP},
            "no_clip_only": {"no_clip": NO_CLIP},
        }.items()
    }
    ref = _rows(runs["no_clip_only"], "no_clip")
    assert [r["draw"] for r in ref] == [0, 1, 2]
    # the steps did move the model (the equalities below are not between no-ops)
    assert all(r["d_p_code"] != 0.0 for r in ref)
    for name in ("clip_first", "no_clip_first"):
        assert _rows(runs[name], "no_clip") == ref, name
    assert _rows(runs["clip_first"], "clip") == _rows(runs["no_clip_first"], "clip")
    assert runs["clip_first"]["base"] == runs["no_clip_first"]["base"] == runs["no_clip_only"]["base"]
