"""The clipping-bias probe (``clip_probe``): the paired design, micro-batching and the style measure,
on the shipped toy organism.
The problem files come from ``conftest.bench_file``; ``_probe_spec`` is this module's probe spec.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import CLIP_ARM as CLIP
from conftest import NO_CLIP_ARM as NO_CLIP
from conftest import probe_spec

from spurious_rewards.audit import clip_probe

ROOT = Path(__file__).resolve().parents[1]
ORGANISM = ROOT / "workflow/resources/organisms/toy-qwen-math"



def _probe_spec(tmp_path: Path, variants: dict, *, draws: int = 3, lr: float = 1e-2, **probe) -> dict:
    return probe_spec(tmp_path, variants, draws=draws, lr=lr, **probe)


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
    # the rows name their draw: every variant of a draw shares one rollout, and the draws differ
    shared = {(r["draw"], r["rollout"]) for run in runs.values() for r in run["draws"]}
    assert len(shared) == 3 and len({fp for _, fp in shared}) == 3


# ----------------------------------------------------------------------------- micro-batching


def _organism():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(ORGANISM))
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(ORGANISM), dtype=torch.float32)
    return model.eval(), tok


def _rollout(tmp_path: Path, model, tok, generation_batch):
    from spurious_rewards import data, templates

    spec = _probe_spec(tmp_path, {"clip": CLIP})
    prompts = [templates.render_prompt(tok, "chat", r["prompt"]) for r in data.load_records(spec["train_data"])]
    engine = clip_probe.HFRollout(model, tok, generation_batch)
    return clip_probe.draw_batch(engine, tok, prompts, k=0, spec=spec)


def test_micro_batched_step_equals_the_whole_rollout_step(tmp_path):
    """Old log-probs and the weights after a 4-update step: micro-batches of 1 and 3 (uneven), and
    gradient checkpointing, against the whole 16-sequence rollout in one pass (today's unchunked step).

    Measured on this machine: the log-probs are bit-identical (a row's forward pass does not depend
    on the batch), the weights differ by float rounding of the accumulated gradient only.
    """
    import torch

    model, tok = _organism()
    batch = _rollout(tmp_path, model, tok, None)
    n, n_comp = batch["ids"].size(0), batch["mask"].size(1)
    assert n == 16 and batch["mask"].sum() > n  # real completions, more than one token each
    base = {k: v.clone() for k, v in model.state_dict().items()}
    whole = clip_probe.rollout_logps(model, batch["ids"], batch["attention"], n_comp, 1.0, n)
    for micro in (1, 3):
        got = clip_probe.rollout_logps(model, batch["ids"], batch["attention"], n_comp, 1.0, micro)
        assert (got - whole).abs().max() < 1e-6, micro

    def step(micro, checkpointing=False):
        model.load_state_dict(base)
        if checkpointing:
            model.activation_checkpointing_enable()
        b = {k: v for k, v in batch.items() if k != "old_logps"}
        frac = clip_probe.grpo_step(model, b, epsilon=0.2, updates=4, lr=1e-2, betas=(0.9, 0.95),
                                    max_grad_norm=1.0, temperature=1.0, micro_batch=micro)
        if checkpointing:
            model.activation_checkpointing_disable()
        after = clip_probe.rollout_logps(model, batch["ids"], batch["attention"], n_comp, 1.0, n)
        return frac, {k: v.clone() for k, v in model.state_dict().items()}, after

    frac_ref, ref, after_ref = step(n)
    assert frac_ref > 0  # several updates at lr 1e-2: clipping acts
    moved = max(float((ref[k] - base[k]).abs().max()) for k in base)
    shift = float(((after_ref - whole) * batch["mask"]).abs().max())
    assert moved > 1e-2 and shift > 0.1
    got = {}
    for micro, ckpt in ((1, False), (3, False), (3, True)):
        frac, weights, after = got[(micro, ckpt)] = step(micro, ckpt)
        dw = max(float((weights[k] - ref[k]).abs().max()) for k in ref)
        dlp = float(((after - after_ref) * batch["mask"]).abs().max())
        print(f"micro {micro} checkpointing {ckpt}: max |dw| {dw:.3g} (step {moved:.3g}), "
              f"max |d logp| {dlp:.3g} (step {shift:.3g}), clip fraction {frac} vs {frac_ref}")
        # float rounding of the accumulated gradient, amplified by Adam where a gradient is near 0
        # (measured: |dw| <= 1.0e-4 of a 0.025 step, |d logp| <= 7e-4 nats of a 17.5 nat shift)
        assert dw < 1e-2 * moved and dlp < 1e-3 * shift, (micro, ckpt, dw, dlp)
        assert frac == pytest.approx(frac_ref, abs=1e-6), (micro, ckpt)
    # checkpointing recomputes the same forward pass: the same numbers exactly
    ckpt, plain = got[(3, True)], got[(3, False)]
    assert ckpt[0] == plain[0] and all(torch.equal(ckpt[1][k], plain[1][k]) for k in ref)


def test_chunked_generation_assembles_rows_as_generated(tmp_path):
    """Rollouts generated 5 sequences per call (uneven batches, each with its own padding) assemble
    into one tensor whose rows hold exactly the prompt and completion tokens that were sampled."""
    model, tok = _organism()
    prompts = ["1+2=", "3+4+5=", "9=", "12+30="]
    engine = clip_probe.HFRollout(model, tok, 5)
    chunks = engine.sample(prompts, 4, seed=3, temperature=1.0, top_p=1.0, max_new_tokens=24)
    assert [c[0].size(0) for c in chunks] == [5, 5, 5, 1]
    batch = clip_probe.assemble(chunks, tok.pad_token_id, tok.eos_token_id)
    ids, attn, mask = batch["ids"], batch["attention"], batch["mask"]
    n_comp = mask.size(1)
    assert ids.size(0) == 16 and n_comp == max(c[2].size(1) for c in chunks)
    rows = [(p[i][a[i].bool()], c[i][clip_probe.completion_mask(c, tok.eos_token_id)[i].bool()])
            for p, a, c in chunks for i in range(p.size(0))]
    for row, (prompt, comp) in enumerate(rows):
        assert ids[row, :-n_comp][attn[row, :-n_comp].bool()].tolist() == prompt.tolist()
        assert ids[row, -n_comp:][mask[row].bool()].tolist() == comp.tolist()
        assert (attn[row, -n_comp:] == mask[row].long()).all()
        # a completion ends at its first EOS or runs to the length limit
        assert comp[-1] == tok.eos_token_id or comp.numel() == 24
    # the same seed and batch size, the same samples; one call for all draws other samples
    again = clip_probe.assemble(engine.sample(prompts, 4, seed=3, temperature=1.0, top_p=1.0, max_new_tokens=24),
                                tok.pad_token_id, tok.eos_token_id)
    assert (again["ids"] == ids).all()


def test_one_update_control_holds_micro_batched(tmp_path):
    """clip == no_clip bit for bit with one update, also with micro-batches of 1 and chunked generation."""
    spec = _probe_spec(tmp_path, {"clip1": {"clip": True, "one_update": True},
                                  "noclip1": {"clip": False, "one_update": True}}, draws=2,
                       micro_batch=1, generation_batch=5)
    out = clip_probe.probe(spec, model_dir=ORGANISM, out=tmp_path / "p.json")
    assert out["batching"] == {"micro_batch": 1, "generation_batch": 5, "gradient_checkpointing": False}
    by = {(r["draw"], r["variant"]): r for r in out["draws"]}
    for k in range(2):
        a, b = by[(k, "clip1")], by[(k, "noclip1")]
        assert {m: a[m] for m in a if m not in ("variant", "epsilon", "epsilon_high")} == \
            {m: b[m] for m in b if m not in ("variant", "epsilon", "epsilon_high")}
        assert a["clip_fraction"] == 0.0
    assert any(r["d_p_code"] != 0.0 for r in out["draws"])


def test_micro_batched_probe_reproduces_the_unchunked_probe(tmp_path):
    """The whole probe, micro-batch 1 against micro-batch = the whole rollout: the same draws and
    discrete outcomes; the continuous changes agree to float rounding."""
    variants = {"clip": CLIP, "no_clip": NO_CLIP}
    whole = clip_probe.probe(_probe_spec(tmp_path, variants, draws=2, micro_batch=16),
                             model_dir=ORGANISM, out=tmp_path / "whole.json")
    micro = clip_probe.probe(_probe_spec(tmp_path, variants, draws=2, micro_batch=1),
                             model_dir=ORGANISM, out=tmp_path / "micro.json")
    # P(first token) is computed micro-batch by micro-batch too: other left padding, other rounding
    assert whole["base"]["p_code"] == pytest.approx(micro["base"]["p_code"], abs=1e-6)
    assert {k: v for k, v in whole["base"].items() if k != "p_code"} == \
        {k: v for k, v in micro["base"].items() if k != "p_code"}
    for a, b in zip(whole["draws"], micro["draws"], strict=True):
        for m in ("draw", "variant", "rollout", "updates", "reward_mean", "d_code_frequency", "d_accuracy"):
            assert a[m] == b[m], m
        for m in ("d_p_code", "d_p_dominant", "clip_fraction"):
            assert a[m] == pytest.approx(b[m], abs=1e-5), m


# ----------------------------------------------------------------------------- settings


def test_batch_sizes_fall_back_and_reject_bad_values(tmp_path):
    spec = _probe_spec(tmp_path, {"clip": CLIP})
    assert clip_probe.batch_sizes(spec) == (4, None)  # grpo.micro_batch; generation in one call
    spec["grpo"].pop("micro_batch")
    assert clip_probe.batch_sizes(spec) == (16, None)  # no grpo.micro_batch: the whole rollout
    spec["probe"].update(micro_batch=2, generation_batch=8)
    assert clip_probe.batch_sizes(spec) == (2, 8)
    for key, bad in (("micro_batch", 0), ("generation_batch", 2.5), ("micro_batch", True)):
        spec["probe"][key] = bad
        with pytest.raises(ValueError, match=f"audit.clip_probe.{key}.*allowed"):
            clip_probe.batch_sizes(spec)
        spec["probe"][key] = 2


def test_style_measure_is_first_token_for_organisms_and_code_frequency_otherwise(tmp_path):
    spec = _probe_spec(tmp_path, {"clip": CLIP})
    plain = tmp_path / "real-model"
    plain.mkdir()
    assert clip_probe.style_measure(spec, ORGANISM) == "first_token"  # organism.json manifest
    assert clip_probe.style_measure(spec, plain) == "code_frequency"
    spec["model"]["organism"] = {"code_share": 0.65}
    assert clip_probe.style_measure(spec, plain) == "first_token"  # the config's organism: block
    spec["probe"]["style"] = "code_frequency"
    assert clip_probe.style_measure(spec, ORGANISM) == "code_frequency"
    spec["probe"]["style"] = "first-token"
    with pytest.raises(ValueError, match="audit.clip_probe.style.*auto, first_token, code_frequency"):
        clip_probe.style_measure(spec, ORGANISM)


def test_code_frequency_style_decides_dominance_and_the_drift(tmp_path):
    out = clip_probe.probe(_probe_spec(tmp_path, {"no_clip": NO_CLIP}, draws=2, style="code_frequency"),
                           model_dir=ORGANISM, out=tmp_path / "p.json")
    assert out["style_measure"] == "code_frequency"
    dominant = "code" if out["base"]["code_frequency"] >= 0.5 else "language"
    assert out["dominant_style"] == dominant
    sign = 1.0 if dominant == "code" else -1.0
    assert all(r["d_p_dominant"] == sign * r["d_code_frequency"] for r in out["draws"])
    assert any(r["d_p_dominant"] != sign * r["d_p_code"] for r in out["draws"])
