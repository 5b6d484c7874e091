"""summary.md rendered from its Jinja2 template (analysis/report.py): byte-identical to the string-built
summary it replaced, plus the plain-words findings at the top.

The golden files under tests/data/ were written by the string-concatenation code
(``aggregate.write_summary`` / ``audit_tables.markdown`` before the template) from the
same planted trees, so comparing against them proves the template changed no byte
but the lines that name the commit and the installed versions (masked on both sides)
and the findings section (new by design; cut before comparing, tested on its own).

Regenerate a golden file only for an intended change of the summary's text:
``SPURIOUS_WRITE_GOLDEN=1 pytest tests/test_summary_template.py`` (the tests then skip), and
review the diff.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import build_paper_tree

from spurious_rewards import config as cfgmod
from spurious_rewards.analysis import aggregate, classify, report

DATA = Path(__file__).resolve().parent / "data"
FINDINGS = "## Findings in plain words"


def stable(text: str, cfg: dict) -> str:
    """The summary without what legitimately varies: commit, versions, config hash, the findings section."""
    text = re.sub(r"^- git commit: .*$", "- git commit: <commit>", text, flags=re.M)
    text = re.sub(r"^- packages: .*$", "- packages: <versions>", text, flags=re.M)
    text = text.replace(cfgmod.config_hash(cfg), "<config-hash>")
    if FINDINGS in text:
        head, rest = text.split(FINDINGS, 1)
        text = head + rest[rest.index("\n## "):].removeprefix("\n")
    return text


def check_golden(name: str, text: str, cfg: dict) -> None:
    path = DATA / name
    got = stable(text, cfg)
    if os.environ.get("SPURIOUS_WRITE_GOLDEN"):
        path.write_text(got, encoding="utf-8")
        pytest.skip(f"wrote {path}")
    want = path.read_text(encoding="utf-8")
    diff = "".join(difflib.unified_diff(want.splitlines(True), got.splitlines(True), f"golden/{name}", "rendered"))
    assert got == want, f"{name}: the rendered summary differs from the golden file:\n{diff}"


def test_summary_is_byte_identical_to_the_golden_file(planted_study) -> None:
    cfg, _, paths = planted_study
    check_golden("summary_golden.md", paths["summary"].read_text(encoding="utf-8"), cfg)


def test_paper_study_summary_is_byte_identical_to_the_golden_file(tmp_path: Path) -> None:
    cfg = build_paper_tree(tmp_path)
    paths = aggregate.aggregate(cfg, tmp_path, n_boot=200)
    check_golden("summary_golden_paper.md", paths["summary"].read_text(encoding="utf-8"), cfg)


def test_empty_study_summary_is_byte_identical_to_the_golden_file(tmp_path: Path) -> None:
    from conftest import make_config

    cfg = make_config()
    paths = aggregate.aggregate(cfg, tmp_path, n_boot=50)
    check_golden("summary_golden_empty.md", paths["summary"].read_text(encoding="utf-8"), cfg)


# ----------------------------------------------------------------------------- findings in plain words
# Planted summary statistics (the frames aggregate builds), so each CI sits exactly where a case needs it.


def _cfg(rewards: dict, benchmarks: dict | None = None) -> dict:
    from conftest import default_config

    cfg = default_config()
    cfg["models"] = {"toy-qwen-math": cfg["models"]["toy-qwen-math"]}
    cfg["rewards"] = rewards
    cfg["benchmarks"] = benchmarks or {"arith": {"dataset": "arith_test", "samples": 4, "temperature": 1.0,
                                                 "pass_at": [1]}}
    cfg["audit"]["clean"] = [b for b in cfg["audit"]["clean"] if b in cfg["benchmarks"]]
    return cfgmod.validate(cfg)


REWARDS = {
    "ground_truth": {"spec": "ground_truth", "labels": "true_labels", "variants": ["clip"]},
    "format": {"spec": "format", "labels": "true_labels", "variants": ["clip"]},
    "random": {"spec": "random(0.5)", "labels": "true_labels", "variants": ["clip", "no_clip"]},
}


def _stats(cells: dict, model: str = "toy-qwen-math", base: dict | None = None) -> pd.DataFrame:
    """summary_stats rows: ``cells[(reward, variant, benchmark)] = {"gain": (mean, lo, hi), "code": (c0, c1)}``
    in pp / percent, final step 20; ``base[benchmark]`` = base accuracy (%)."""
    rows = []

    def row(reward, variant, bench, metric, step, mean, lo=math.nan, hi=math.nan):  # noqa: ANN001, ANN202
        rows.append({"model": model, "family": "qwen-math", "reward": reward, "variant": variant,
                     "benchmark": bench, "step": step, "metric": metric, "n_seeds": 1, "mean": mean / 100,
                     "sd": math.nan, "ci_low": lo / 100, "ci_high": hi / 100})

    for (reward, variant, bench), c in cells.items():
        b = (base or {}).get(bench, 40.0)
        mean, lo, hi = c["gain"]
        row(reward, variant, bench, "accuracy", 0, b, b - 3, b + 3)
        row(reward, variant, bench, "gain", 0, 0.0, 0.0, 0.0)
        row(reward, variant, bench, "accuracy", 20, b + mean, b + lo, b + hi)
        row(reward, variant, bench, "gain", 20, mean, lo, hi)
        if "code" in c:
            row(reward, variant, bench, "code_frequency", 0, c["code"][0])
            row(reward, variant, bench, "code_frequency", 20, c["code"][1])
    return pd.DataFrame(rows, columns=aggregate.STAT_COLUMNS)


def _transitions(cells: dict, model: str = "toy-qwen-math") -> pd.DataFrame:
    """Mean transitions: ``cells[(reward, variant, benchmark)] = {group: (share %, delta pp)}``."""
    rows = []
    for (reward, variant, bench), groups in cells.items():
        for g in classify.GROUPS:
            share, dpp = groups.get(g, (0.0, 0.0))
            rows.append({"scope": "mean", "model": model, "family": "qwen-math", "reward": reward,
                         "variant": variant, "seed": pd.NA, "n_seeds": 1, "benchmark": bench, "step": 20,
                         "group": g, "n": share * 2, "share": share / 100, "delta": dpp / 100, "delta_pp": dpp,
                         "contribution": math.nan})
    return pd.DataFrame(rows, columns=aggregate.TRANSITION_COLUMNS)


@pytest.mark.parametrize(("lo", "hi", "want"), [
    (0.001, 0.2, report.GAIN), (-0.2, -0.001, report.LOSS), (0.0, 0.2, report.NONE), (-0.1, 0.1, report.NONE),
    (math.nan, math.nan, None),
])
def test_outcome_is_the_side_of_zero_the_whole_ci_lies_on(lo, hi, want) -> None:
    assert report.outcome({"ci_low": lo, "ci_high": hi}) == want


def test_findings_name_a_gain_a_loss_and_a_ci_including_zero_against_the_paper() -> None:
    cfg = _cfg(REWARDS)
    st = _stats({("ground_truth", "clip", "arith"): {"gain": (10.0, 5.4, 14.6)},
                 ("format", "clip", "arith"): {"gain": (-0.4, -1.9, 1.1)},
                 ("random", "clip", "arith"): {"gain": (-14.5, -18.4, -10.8)},
                 ("random", "no_clip", "arith"): {"gain": (30.0, 20.0, 40.0)}}, base={"arith": 42.6})
    f = report.findings(aggregate.StatIndex(st), _transitions({}), cfg, aggregate.load_paper_numbers())
    assert f["disagreements"] == []
    (p,) = f["models"]
    text = p["text"]
    assert text.startswith("**toy-qwen-math** (family qwen-math; compared with the paper's Qwen2.5-Math-7B), "
                           "gain on `arith` after 20 steps from a base accuracy of 42.6%: ")
    assert "ground_truth: +10.0 pp [+5.4, +14.6], a gain (paper: +28.8 pp)" in text
    assert "format: -0.4 pp [-1.9, +1.1], no clear change (paper: +16.4 pp)" in text
    assert "random (clip): -14.5 pp [-18.4, -10.8], a loss (paper: +21.4 pp)" in text
    assert "no_clip" not in text  # the findings speak of each reward's main variant, as the first table
    assert text.endswith("Spurious rewards (format, random (clip)): 1 with no clear change, 1 loss, "
                         "where the paper reports a gain for all 2 (+16.4 to +21.4 pp).")
    assert p["outcomes"] == {"ground_truth": report.GAIN, "format": report.NONE, "random": report.LOSS}


def test_findings_follow_the_ci_not_the_size_of_the_gain() -> None:
    """A large mean with a wide CI is no clear change; a small one with a tight CI is a gain."""
    cfg = _cfg({k: REWARDS[k] for k in ("ground_truth", "format")})
    st = _stats({("ground_truth", "clip", "arith"): {"gain": (20.0, -1.0, 41.0)},
                 ("format", "clip", "arith"): {"gain": (0.5, 0.1, 0.9)}})
    (p,) = report.findings(aggregate.StatIndex(st), _transitions({}), cfg, None)["models"]
    assert p["outcomes"] == {"ground_truth": report.NONE, "format": report.GAIN}
    assert "paper" not in p["text"]  # no paper numbers given: no comparison


def _greedy_case(greedy_split: dict) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    benchmarks = {"arith": {"dataset": "arith_test", "samples": 4, "temperature": 1.0, "pass_at": [1]},
                  "arith_greedy": {"dataset": "arith_test", "samples": 1, "temperature": 0.0, "pass_at": [1]},
                  "clean_l2": {"dataset": "clean_l2", "samples": 1, "temperature": 0.0, "pass_at": [1]}}
    cfg = _cfg({k: REWARDS[k] for k in ("ground_truth", "format")}, benchmarks)
    st = _stats({
        ("ground_truth", "clip", "arith"): {"gain": (10.0, 5.4, 14.6), "code": (65.6, 95.9)},
        ("ground_truth", "clip", "arith_greedy"): {"gain": (-7.5, -13.5, -2.0), "code": (100.0, 100.0)},
        # a different dataset: no pair with arith, even though it disagrees in sign
        ("ground_truth", "clip", "clean_l2"): {"gain": (-1.0, -3.0, -0.5)},
        # greedy CI includes 0: not a disagreement
        ("format", "clip", "arith"): {"gain": (3.0, 1.0, 5.0), "code": (65.6, 70.0)},
        ("format", "clip", "arith_greedy"): {"gain": (-2.5, -6.5, 1.5), "code": (100.0, 100.0)},
    })
    trans = _transitions({
        ("ground_truth", "clip", "arith"): {"Code→Code": (65.0, -4.0), "Lang→Code": (31.0, 14.0),
                                            "Lang→Lang": (4.0, 0.0)},
        ("ground_truth", "clip", "arith_greedy"): greedy_split,
    })
    return cfg, st, trans


def test_a_sampled_greedy_sign_disagreement_is_explained_by_the_measured_style_shift() -> None:
    cfg, st, trans = _greedy_case({"Code→Code": (100.0, -7.5)})
    f = report.findings(aggregate.StatIndex(st), trans, cfg, aggregate.load_paper_numbers())
    (d,) = f["disagreements"]
    assert d.startswith("**toy-qwen-math, ground_truth: sampled and greedy decoding disagree.** "
                        "+10.0 pp [+5.4, +14.6] on `arith` (T=1, a gain) but -7.5 pp [-13.5, -2.0] on "
                        "`arith_greedy` (T=0, a loss).")
    assert ("Sampled: code-style answers 65.6% → 95.9%; the 31.0% of problems whose first answer switched style "
            "changed the accuracy by +14.0 pp, those that kept their style by -4.0 pp.") in d
    assert ("Greedy: code-style answers 100.0% → 100.0%; no problem's first answer switched style, and the "
            "accuracy changed by -7.5 pp.") in d
    assert "So the sampled change comes from training moving the choice of style" in d


def test_the_style_explanation_is_left_out_where_the_data_do_not_support_it() -> None:
    # the greedy loss is carried by problems that switched style: the "within the style" reading is wrong here
    cfg, st, trans = _greedy_case({"Code→Code": (50.0, -1.5), "Code→Lang": (50.0, -6.0)})
    (d,) = report.findings(aggregate.StatIndex(st), trans, cfg, None)["disagreements"]
    assert "disagree" in d and "Greedy: code-style answers 100.0% → 100.0%; the 50.0%" in d
    assert "So the sampled change" not in d


def test_the_summary_opens_with_the_findings(planted_study) -> None:
    cfg, _, paths = planted_study
    text = paths["summary"].read_text(encoding="utf-8")
    assert text.index(FINDINGS) < text.index("## Gain over the base model")
    section = text.split(FINDINGS, 1)[1].split("\n## ", 1)[0]
    paragraphs = [p for p in section.split("\n\n") if p.startswith("**")]
    assert [p.split("**")[1] for p in paragraphs] == list(cfg["models"])
    # each reward's outcome word matches the CI in the gains table
    st = pd.read_csv(paths["summary_stats"])
    for model, para in zip(cfg["models"], paragraphs, strict=True):
        for reward in cfg["rewards"]:
            g = st.query(f"model == {model!r} and reward == {reward!r} and variant == 'clip' and benchmark == 'arith' "
                         "and metric == 'gain' and step == 20").iloc[0]
            label = f"{reward} (clip)" if len(cfg["rewards"][reward]["variants"]) > 1 else reward
            assert f"{label}: {report._gain_words(g)}, {report.outcome(g)}" in para, (model, reward, para)


@pytest.mark.parametrize(("gains", "words"), [
    ([16.4, 24.6, 21.4], "a gain for all 3 (+16.4 to +24.6 pp)"),
    ([-8.5, -6.7], "a loss for all 2 (-8.5 to -6.7 pp)"),
    ([-8.5, -6.7, 0.0], "no gain for any of them (-8.5 to +0.0 pp)"),
    ([0.0, 4.2], "no loss for any of them (+0.0 to +4.2 pp)"),
    ([-4.9, 6.1], "gains and losses (-4.9 to +6.1 pp)"),
    ([21.4], "a gain (+21.4 pp)"),
])
def test_the_papers_numbers_in_words(gains, words) -> None:
    assert report._paper_direction(gains) == words


def _write_style_eval(path: Path, cfg: dict, model: str, steps: list[int], p_code: float, code_ok: np.ndarray,
                      lang_ok: np.ndarray, rng: np.random.Generator) -> None:
    """Sample files of an organism that picks its style with the first token: sampled benchmarks draw the style
    per sample (P(code) = ``p_code``), greedy ones always take the likelier style; each problem's code and
    language answers are right or wrong as ``code_ok`` / ``lang_ok`` say."""
    from spurious_rewards import io
    from spurious_rewards.evaluation import evaluate

    rows = []
    for step in steps:
        for bench, b in cfg["benchmarks"].items():
            k, n = b["samples"], code_ok.size
            code = (rng.random((n, k)) < p_code) if b["temperature"] > 0 else np.full((n, k), p_code > 0.5)
            correct = np.where(code, code_ok[:, None], lang_ok[:, None])
            io.write_jsonl(({"id": f"arith/{p}", "i": i, "response": "r", "pred": "7", "correct": bool(correct[p, i]),
                             "code": bool(code[p, i]), "repetition": False, "tokens": 9}
                            for p in range(n) for i in range(k)), path / "samples" / f"step{step}_{bench}.jsonl.gz")
            summ = evaluate.summarize(correct.tolist(), code.tolist(), np.zeros_like(code).tolist(),
                                      np.full((n, k), 9).tolist(), b["pass_at"])
            rows.append({"step": step, "benchmark": bench, **summ})
    io.write_json({"model": model, "results": rows}, path / "summary.json")


def test_a_planted_tree_whose_sampled_and_greedy_benchmarks_disagree(tmp_path: Path) -> None:
    """Ground truth moves P(code) 0.65 -> 0.95 and breaks 6% of the right code answers: sampled accuracy rises
    (more code, the more accurate style), greedy accuracy falls (it wrote code already and only sees the breakage)."""
    from conftest import make_config

    cfg = make_config()
    cfg["models"] = {"toy-qwen-math": cfg["models"]["toy-qwen-math"]}
    cfg["rewards"] = {"ground_truth": REWARDS["ground_truth"]}
    cfg["benchmarks"] = {"arith": {"dataset": "arith_test", "samples": 4, "temperature": 1.0, "pass_at": [1]},
                         "arith_greedy": {"dataset": "arith_test", "samples": 1, "temperature": 0.0, "pass_at": [1]}}
    cfg["audit"]["clean"] = []
    cfg = cfgmod.validate(cfg)
    rng = np.random.default_rng(3)
    n = 400
    code_ok, lang_ok = rng.random(n) < 0.65, rng.random(n) < 0.15
    broken = code_ok & (rng.random(n) < 0.06)
    _write_style_eval(tmp_path / "eval/toy-qwen-math/base", cfg, "toy-qwen-math", [0], 0.65, code_ok, lang_ok, rng)
    for run in cfgmod.runs(cfg):
        _write_style_eval(tmp_path / "eval" / run.path, cfg, run.model, [10, 20], 0.95, code_ok & ~broken, lang_ok,
                          rng)
    paths = aggregate.aggregate(cfg, tmp_path, n_boot=400)
    text = paths["summary"].read_text(encoding="utf-8")
    section = text.split(FINDINGS, 1)[1].split("\n## ", 1)[0]
    (d,) = [p for p in section.split("\n\n") if "disagree" in p]
    assert d.startswith("**toy-qwen-math, ground_truth: sampled and greedy decoding disagree.**")
    assert "on `arith` (T=1, a gain)" in d and "on `arith_greedy` (T=0, a loss)" in d
    assert "Greedy: code-style answers 100.0% → 100.0%; no problem's first answer switched style" in d
    assert "So the sampled change comes from training moving the choice of style" in d
    # the same numbers as the tables
    every = next(ln for ln in text.splitlines() if ln.startswith("| toy-qwen-math | ground_truth | clip |"))
    for cell in every.strip("|").split("|")[3:]:
        mean, ci = cell.strip().split(" ", 1)
        assert f"{mean} pp {ci}" in d
