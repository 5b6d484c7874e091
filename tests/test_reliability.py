"""Reliability: killed jobs, concurrent writers, hostile model output, bad config, provenance.

See RELIABILITY.md for the guarantees each test proves. Everything here is deterministic
(fixed seeds, fixed corpora; kills are triggered by observed state, never by luck) and
runs on CPU in well under two minutes.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from spurious_rewards import config, data, io, paths, provenance, training
from spurious_rewards import scoring as grading
from spurious_rewards.analysis import samples
from spurious_rewards.scoring import rewards, style

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostile_corpus import MEGABYTE, hostile_corpus, marker_payloads

ROOT = Path(__file__).resolve().parents[1]
ORGANISM = ROOT / "workflow/resources/organisms/toy-qwen-math"
CLI = [sys.executable, "-m", "spurious_rewards.cli"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def _leftovers(d: Path) -> list[str]:
    """Visible entries of ``d`` (atomic_output's temporaries are hidden ``.x.tmp-*`` siblings)."""
    return sorted(p.name for p in d.iterdir() if not p.name.startswith("."))


def _wait_for(pred, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert proc.poll() is None, f"process ended before {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.005)


# ------------------------------------------------------------------------------------------
# 1. killed jobs leave no partial output; a rerun completes
# ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "test.jsonl"
    data.prepare_to_file({"name": "t", "kind": "synthetic", "n": 12, "seed": 0, "level": 1, "split": "test"}, path)
    return path


def _eval_spec(bench: Path, seed: int = 0) -> dict:
    return {"model": {"name": "toy", "path": str(ORGANISM), "template": "chat"},
            "evaluation": {"engine": "hf", "max_new_tokens": 32, "batch_size": 16, "seed": seed, "threads": 1,
                           "grading_workers": 1},
            "benchmarks": {"a": {"dataset": "t", "samples": 2, "temperature": 1.0, "top_p": 1.0, "pass_at": [1],
                                 "data": str(bench)},
                           **{k: {"dataset": "t", "samples": 2, "temperature": 0.0, "top_p": 1.0, "pass_at": [1],
                                  "data": str(bench)} for k in ("b", "c", "d")}}}


def _evaluate_cmd(spec: dict, out: Path) -> list[str]:
    return [*CLI, "evaluate", "--spec", json.dumps(spec), "--model-dir", str(ORGANISM),
            "--out-summary", str(out / "summary.json"), "--out-samples", str(out / "samples"), "--threads", "1"]


@pytest.mark.slow
def test_sigkill_evaluate_mid_write_leaves_nothing_partial_and_rerun_completes(tmp_path, bench):
    spec = _eval_spec(bench, seed=7)
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen(_evaluate_cmd(spec, out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # kill once the samples temporary holds the first benchmark's file: mid-write by construction
        # (three more benchmarks are still to generate, so the job cannot have finished)
        def first_file_written() -> bool:
            return any(p.name.startswith(".samples.tmp-") and any(p.iterdir()) for p in out.iterdir())

        _wait_for(first_file_written, proc, 240, "the samples temporary was written")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert _leftovers(out) == []  # neither summary.json nor samples/ exists at the target paths
    res = subprocess.run(_evaluate_cmd(spec, out), env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _leftovers(out) == ["samples", "summary.json"]
    summary = io.read_json(out / "summary.json")
    assert {r["benchmark"] for r in summary["results"]} == {"a", "b", "c", "d"}
    for name in ("a", "b", "c", "d"):
        assert len(list(io.iter_jsonl(out / f"samples/step0_{name}.jsonl.gz"))) == 24
    # 5. provenance, with the seed that produced the numbers
    prov = summary["provenance"]
    assert prov["seed"] == 7 and prov["config_hash"] == provenance.spec_hash(spec)
    assert set(prov["packages"]) == set(provenance.PACKAGES) and prov["python"]


@pytest.mark.slow
def test_sigkill_prepare_data_leaves_nothing_partial_and_rerun_completes(tmp_path):
    spec = {"name": "big", "kind": "synthetic", "n": 300_000, "seed": 0, "level": 3, "split": "train"}
    target = tmp_path / "big.jsonl"
    cmd = [*CLI, "prepare-data", "--spec", json.dumps(spec), "--out", str(target)]
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # kill as soon as the temporary exists (mid-write), at the latest 1.5 s after start; 300k
        # problems take several seconds, so the job is always still running when killed
        start = time.monotonic()
        _wait_for(lambda: time.monotonic() - start > 1.5 or any(p.name.startswith(".big.tmp-") for p in tmp_path.iterdir()),
                  proc, 60, "the kill point")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not target.exists()
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _leftovers(tmp_path) == ["big.jsonl", "big.jsonl.provenance.json"]
    assert sum(1 for _ in io.iter_jsonl(target)) == 300_000
    _assert_provenance(provenance.read_sidecar(target), spec, 0, target)


# --- spurious aggregate ------------------------------------------------------------------
# The results tree is test_aggregate's: 2 models x 6 (reward, variant) cells x 2 seeds, in the
# pipeline's own formats (summary.json, samples/step*_*.jsonl.gz, metrics.jsonl).


@pytest.fixture(scope="module")
def agg_study(tmp_path_factory) -> dict:
    """A results tree, an older one (one run missing) and the uninterrupted outputs of both."""
    from conftest import build_tree

    root = tmp_path_factory.mktemp("agg")
    cfg = _agg_config()
    tree, old_tree = root / "tree", root / "old_tree"
    build_tree(tree, cfg)
    shutil.copytree(tree, old_tree)
    gone = "toy-qwen-math/random/clip/seed1"
    shutil.rmtree(old_tree / "eval" / gone)
    (old_tree / "train" / gone / "metrics.jsonl").unlink()
    study = {"cfg": cfg, "tree": tree, "old_tree": old_tree, "root": root}
    for name, results in (("ref", tree), ("old", old_tree)):
        res = subprocess.run(_aggregate_cmd(cfg, results, root / name), env=ENV, capture_output=True, text=True,
                             timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        study[name] = {k: p.read_bytes() for k, p in paths.aggregate_outputs(root / name, cfg["models"]).items()}
    study["targets"] = {k: p.relative_to(root / "ref")
                        for k, p in paths.aggregate_outputs(root / "ref", cfg["models"]).items()}
    # the tables, figures and summary of the older study differ from the newer one's
    differ = {k for k in study["ref"] if study["old"][k] != study["ref"][k]}
    assert {"metrics", "summary_stats", "transitions", "summary", "fig_accuracy"} <= differ, differ
    return study


def _agg_config() -> dict:
    """test_aggregate's study shape: 2 models, ground_truth + random (clip, no_clip), seeds 1-2, steps 10/20."""
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    cfg.pop("audit", None)  # its defaults; the shipped block names benchmarks this study does not have
    cfg["models"] = {k: cfg["models"][k] for k in ("toy-qwen-math", "toy-nocode")}
    cfg["rewards"] = {
        "ground_truth": {"spec": "ground_truth", "labels": "true_labels", "variants": ["clip"]},
        "random": {"spec": "random(0.5)", "labels": "true_labels", "variants": ["clip", "no_clip"]},
    }
    cfg["seeds"] = [1, 2]
    cfg["grpo"]["steps"], cfg["grpo"]["save_every"] = 20, 10
    cfg["benchmarks"] = {
        "arith": {"dataset": "arith_test", "samples": 1, "temperature": 0.0, "pass_at": [1]},
        "arith_avg4": {"dataset": "arith_test", "samples": 4, "temperature": 0.6, "pass_at": [1, 4]},
    }
    return config.validate(cfg)


def _aggregate_cmd(cfg: dict, results: Path, out: Path) -> list[str]:
    return [*CLI, "aggregate", "--spec", json.dumps(cfg), "--results-dir", str(results), "--out-dir", str(out),
            "--n-boot", "400"]


def _visible_files(d: Path) -> set[Path]:
    """Files under ``d`` relative to it, leaving out atomic_output's hidden temporaries and provenance sidecars."""
    return {p.relative_to(d) for p in d.rglob("*")
            if p.is_file() and not p.name.startswith(".") and not p.name.endswith(io.SIDECAR_SUFFIX)}


def _kill_when(cmd: list[str], pred, what: str) -> None:
    proc = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(pred, proc, 240, what)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"aggregate ended (rc {proc.returncode}) before the kill"


@pytest.mark.slow
def test_sigkill_aggregate_mid_run_leaves_nothing_partial_and_rerun_matches(tmp_path, agg_study):
    targets, ref = agg_study["targets"], agg_study["ref"]
    out = tmp_path / "results"
    cmd = _aggregate_cmd(agg_study["cfg"], agg_study["tree"], out)
    # kill as soon as the first output is published: the figures and summary.md are still to come
    _kill_when(cmd, lambda: any((out / t).exists() for t in targets.values()), "the first output")
    present = {k for k, t in targets.items() if (out / t).exists()}
    assert present and present != set(targets), present  # some, not all
    print(f"aggregate killed with {sorted(present)} of {len(targets)} outputs published")
    for k in present:  # what exists is complete: byte-equal to the uninterrupted run's
        assert (out / targets[k]).read_bytes() == ref[k], k
    assert _visible_files(out) == {targets[k] for k in present}  # nothing else at a target-like path
    res = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert _visible_files(out) == set(targets.values())
    for k, t in targets.items():  # tables, figures, summary.md and the DVC files, byte for byte
        assert (out / t).read_bytes() == ref[k], k
        assert provenance.read_sidecar(out / t)["sha256"] == hashlib.sha256(ref[k]).hexdigest(), k


@pytest.mark.slow
def test_sigkill_aggregate_over_an_older_study_leaves_each_output_old_or_new(tmp_path, agg_study):
    targets, ref, old = agg_study["targets"], agg_study["ref"], agg_study["old"]
    out = tmp_path / "results"
    shutil.copytree(agg_study["root"] / "old", out)  # the complete outputs of an older study
    inode = {k: (out / t).stat().st_ino for k, t in targets.items()}

    def first_replaced() -> bool:
        return any((out / t).stat().st_ino != inode[k] for k, t in targets.items())

    _kill_when(_aggregate_cmd(agg_study["cfg"], agg_study["tree"], out), first_replaced, "the first replacement")
    replaced = {k for k, t in targets.items() if (out / t).stat().st_ino != inode[k]}
    assert replaced and replaced != set(targets), replaced
    print(f"aggregate killed with {sorted(replaced)} of {len(targets)} outputs replaced")
    for k, t in targets.items():
        # a replaced output is the new one whole; any other is the old one untouched (never edited in place)
        assert (out / t).read_bytes() == (ref[k] if k in replaced else old[k]), k
    assert _visible_files(out) == set(targets.values())
    res = subprocess.run(_aggregate_cmd(agg_study["cfg"], agg_study["tree"], out), env=ENV, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    for k, t in targets.items():
        assert (out / t).read_bytes() == ref[k], k


# ------------------------------------------------------------------------------------------
# 2. concurrency
# ------------------------------------------------------------------------------------------

_WRITER = """
import sys
from spurious_rewards import io
target, tag, rounds = sys.argv[1], sys.argv[2], int(sys.argv[3])
payload = (tag * 4096 + "\\n") * 256  # about 1 MB, different per writer
for _ in range(rounds):
    with io.atomic_output(target) as tmp, open(tmp, "w") as f:
        for i in range(0, len(payload), 65536):
            f.write(payload[i:i + 65536])
"""


def test_two_processes_atomic_output_same_target_never_tear(tmp_path):
    target = tmp_path / "shared.txt"
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(target), tag, "15"], env=ENV)
             for tag in ("A", "B")]
    # a reader sees only complete files, at every moment
    seen = set()
    while any(p.poll() is None for p in procs):
        if target.exists():
            text = target.read_text()
            assert text in {("A" * 4096 + "\n") * 256, ("B" * 4096 + "\n") * 256}
            seen.add(text[0])
        time.sleep(0.002)
    assert [p.wait() for p in procs] == [0, 0]
    final = target.read_text()
    assert final in {("A" * 4096 + "\n") * 256, ("B" * 4096 + "\n") * 256}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shared.txt"]  # no temporaries left


def test_two_prepare_data_processes_in_one_directory(tmp_path):
    specs = [{"name": f"d{i}", "kind": "synthetic", "n": 2000, "seed": i, "level": 2, "split": "train"}
             for i in range(2)]
    procs = [subprocess.Popen([*CLI, "prepare-data", "--spec", json.dumps(s), "--out", str(tmp_path / f"d{i}.jsonl")],
                              env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for i, s in enumerate(specs)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d0.jsonl", "d0.jsonl.provenance.json", "d1.jsonl",
                                                          "d1.jsonl.provenance.json"]
    for i, s in enumerate(specs):
        ref = tmp_path.parent / f"ref{i}-{tmp_path.name}.jsonl"
        data.prepare_to_file(s, ref)
        assert (tmp_path / f"d{i}.jsonl").read_bytes() == ref.read_bytes()
        # 5. provenance of a prepare-data file (the rule's `spurious prepare-data`)
        _assert_provenance(provenance.read_sidecar(tmp_path / f"d{i}.jsonl"), s, i, tmp_path / f"d{i}.jsonl")


_GRADER = """
import json, sys
from spurious_rewards import scoring as grading
pairs = [tuple(p) for p in json.load(open(sys.argv[1]))]
first = grading.grade_many(pairs, workers=2)
hits_first = grading.grading_stats()["cache_hits"]
again = grading.grade_many(pairs, workers=2)
stats = grading.grading_stats()
print(json.dumps({"first": first, "again": again, "hits_first": hits_first,
                  "hits_again": stats["cache_hits"] - hits_first, "sympy": stats["sympy"]}))
"""


def _grading_pairs() -> list[tuple[str | None, str]]:
    """Distinct (pred, label) pairs: cheap verdicts, math-verify ones, wrong ones, None and junk."""
    pairs: list[tuple[str | None, str]] = []
    for i in range(1, 41):
        pairs += [(f"\\frac{{{i}}}{{{2 * i}}}", "0.5"), (f"{i}+x", f"x+{i}"), (f"\\sqrt{{{i * i}}}", str(i)),
                  (str(i), str(i)), (f"{i}.0", str(i)), (str(i + 1), str(i)), (f"2^{{{i % 7}}}+{i}", str(2 ** (i % 7) + i)),
                  (f"\\frac{{{i}}}{{3}}", f"{i}/3")]
    pairs += [(None, "1"), ("", "1"), ("\\boxed{", "1"), ("10^{10^{10}}", "1"), ("x" * 5000, "x")]
    assert len(set(pairs)) == len(pairs)
    return pairs


def test_grader_cache_is_per_process_and_concurrent_grading_matches_serial(tmp_path):
    pairs = _grading_pairs()
    path = tmp_path / "pairs.json"
    path.write_text(json.dumps(pairs))
    cmd = [sys.executable, "-c", _GRADER, str(path)]
    serial = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert serial.returncode == 0, serial.stderr[-3000:]
    alone = json.loads(serial.stdout)
    # two processes grading the same pairs at once, started after the serial one graded them all
    procs = [subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-3000:] for _, e in outs]
    both = [json.loads(o) for o, _ in outs]
    in_process = [grading.grade(p, lab) for p, lab in pairs]
    assert any(in_process) and not all(in_process) and alone["sympy"] > 40
    for r in (alone, *both):
        assert r["first"] == r["again"] == alone["first"] == in_process
        # per process: nothing graded by another process (or an earlier one) is a cache hit here,
        # while this process's own verdicts are, on the second pass
        assert r["hits_first"] == 0 and r["sympy"] == alone["sympy"]
        assert r["hits_again"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.json"]  # nothing shared on disk


# ------------------------------------------------------------------------------------------
# 3. hostile model output
# ------------------------------------------------------------------------------------------

REWARD_SPECS = ["ground_truth", "format", "python", "no_python", "no_repetition", "random(0.5)",
                "ground_truth AND format AND NOT python AND no_repetition"]
LABELS = ["42", "\\frac{1}{2}", "x+1", "10^{10}"]
N_HOSTILE = 10_000


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    texts = hostile_corpus(N_HOSTILE, seed=0)
    assert len(texts) == N_HOSTILE and sum(len(t) >= MEGABYTE for t in texts) >= 3
    assert any("\x00" in t for t in texts) and any(any("\udc80" <= c <= "\udcff" for c in t) for t in texts)
    return texts


def _labels(n: int) -> list[str]:
    return [LABELS[i % len(LABELS)] for i in range(n)]


# plain ground truth grades all 10,000 responses (the compound specs stop earlier): slow
@pytest.mark.parametrize(
    "spec", [pytest.param(s, marks=pytest.mark.slow) if s == "ground_truth" else s for s in REWARD_SPECS]
)
def test_every_reward_survives_the_hostile_corpus(corpus, spec):
    reward = rewards.parse_reward(spec)
    start = time.monotonic()
    scores = reward.batch(corpus, _labels(len(corpus)), workers=2)
    assert len(scores) == len(corpus)
    assert all(type(s) is float and s in (0.0, 1.0) for s in scores)
    # the one-by-one path (what TRL/OpenRLHF call) agrees on a sample that holds every family
    # and all the megabyte responses (ground-truth verdicts are cached by the batch above)
    idx = list(range(0, len(corpus), 25)) + list(range(4))
    ctxs = [rewards.RewardContext(sample_index=i) for i in range(len(corpus))]
    for i in idx:
        s = reward(corpus[i], _labels(len(corpus))[i], ctxs[i])
        assert type(s) is float and s in (0.0, 1.0)
        assert s == scores[i], (spec, i, corpus[i][:200])
    assert time.monotonic() - start < 90


def test_classifiers_survive_the_hostile_corpus(corpus):
    start = time.monotonic()
    code = [style.is_code(t) for t in corpus]
    rep = [rewards.detect_repetition(t) for t in corpus]
    preds = [grading.extract_answer(t) for t in corpus] + [grading.extract_answer(t, r1=True) for t in corpus]
    assert all(type(c) is bool for c in code) and all(type(r) is bool for r in rep)
    assert all(p is None or isinstance(p, str) for p in preds)
    assert any(code) and not all(code) and any(rep) and not all(rep)
    assert time.monotonic() - start < 60


def test_model_output_is_never_executed(tmp_path):
    markers = [f"/tmp/PWNED-{uuid.uuid4().hex}", str(tmp_path / f"PWNED-{uuid.uuid4().hex}")]
    texts = [t for m in markers for t in marker_payloads(m)]
    labels_ = [t for m in markers for t in marker_payloads(m)][::-1]  # hostile labels too
    try:
        for spec in REWARD_SPECS:
            reward = rewards.parse_reward(spec)
            assert all(s in (0.0, 1.0) for s in reward.batch(texts, _labels(len(texts)), workers=2))
            assert all(s in (0.0, 1.0) for s in reward.batch(texts, labels_, workers=2))
            assert all(reward(t, lab) in (0.0, 1.0) for t, lab in zip(texts, labels_, strict=True))
        for t in texts:
            style.is_code(t)
            rewards.detect_repetition(t)
            for r1 in (False, True):
                grading.grade(grading.extract_answer(t, r1=r1), "42", timeout=2.0)
                grading.grade(t, t, timeout=2.0)
        for m in markers:
            assert not Path(m).exists(), f"model output was executed: {m} exists"
    finally:
        for m in markers:
            Path(m).unlink(missing_ok=True)


# ------------------------------------------------------------------------------------------
# 4. bad config
# ------------------------------------------------------------------------------------------

_BOGUS = "bogus_key_xyz"


def _resolve(schema: dict, node: dict) -> dict:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = {**schema["$defs"][name], **{k: v for k, v in node.items() if k != "$ref"}}
    return node


def _wrong_type_value(types: list[str]):
    for value, kinds in (("not-a-number", {"string"}), (["a", "list"], {"array"}), (1.5, {"number"}),
                         (True, {"boolean"}), ({"an": "object"}, {"object"})):
        if not kinds & set(types):
            return value
    raise AssertionError(types)


def schema_violations(schema: dict, base: dict) -> list[tuple[str, str, list, object]]:
    """(rule, key path, path, bad value) for every enum/minimum/exclusiveMinimum/maximum/type/
    additionalProperties:false rule reachable from the config's keys; ``bad value`` is
    ``_BOGUS`` (add an unknown key) for additionalProperties."""
    out: list[tuple[str, str, list, object]] = []

    def walk(node: dict, path: list, inst) -> None:
        node = _resolve(schema, node)
        types = node.get("type")
        types = [types] if isinstance(types, str) else list(types or [])
        if types:
            out.append(("type", path, _wrong_type_value(types)))
        if "enum" in node:
            out.append(("enum", path, "definitely-not-allowed"))
        num_int = "integer" in types
        if "minimum" in node:
            out.append(("minimum", path, node["minimum"] - (1 if num_int else 0.5)))
        if "exclusiveMinimum" in node:
            out.append(("exclusiveMinimum", path, node["exclusiveMinimum"]))
        if "maximum" in node:
            out.append(("maximum", path, node["maximum"] + (1 if num_int else 0.5)))
        if node.get("additionalProperties") is False:
            out.append(("additionalProperties", path, _BOGUS))
        for key, sub in node.get("properties", {}).items():
            walk(sub, [*path, key], inst.get(key) if isinstance(inst, dict) else None)
        extra = node.get("additionalProperties")
        if isinstance(extra, dict) and isinstance(inst, dict) and inst:
            key = next(iter(inst))  # a real entry of the map (e.g. the first model)
            walk(extra, [*path, key], inst[key])
        if isinstance(node.get("items"), dict):
            walk(node["items"], [*path, 0], (inst or [None])[0] if isinstance(inst, list) else None)

    walk(schema, [], base)
    return [(rule, ".".join(map(str, p)), p, v) for rule, p, v in out]


def _apply(cfg: dict, path: list, value) -> str:
    """Put ``value`` at ``path`` (creating parents); returns the key path the error must name."""
    if value == _BOGUS:
        node = cfg
        for k in path:
            node = node.setdefault(k, {}) if isinstance(node, dict) else node[k]
        node[_BOGUS] = 1
        return ".".join(map(str, [*path, _BOGUS]))
    node = cfg
    for k, nxt in zip(path[:-1], path[1:], strict=True):
        if isinstance(node, list):
            node = node[k]
            continue
        if not isinstance(node.get(k), (dict, list)):
            node[k] = [] if isinstance(nxt, int) else {}
        node = node[k]
    last = path[-1]
    if isinstance(node, list):
        node[:] = [value]
    else:
        node[last] = value
    return ".".join(map(str, path))


@pytest.mark.slow
def test_every_schema_rule_is_enforced_with_the_key_path():
    schema = config.load_schema()
    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    config.validate(copy.deepcopy(base))  # the base is valid
    cases = schema_violations(schema, base)
    by_rule = {r: sum(1 for c in cases if c[0] == r) for r in {c[0] for c in cases}}
    assert by_rule["enum"] >= 7 and by_rule["minimum"] >= 20 and by_rule["additionalProperties"] >= 8
    assert by_rule["exclusiveMinimum"] >= 4 and by_rule["type"] >= 60
    for rule, key, path, value in cases:
        cfg = copy.deepcopy(base)
        if path == []:
            cfg = value if value != _BOGUS else {**cfg, _BOGUS: 1}
            expect = _BOGUS if value == _BOGUS else "config must be a mapping"
        else:
            expect = _apply(cfg, path, value)
        with pytest.raises(config.ConfigError) as err:
            config.validate(cfg)
        assert expect in str(err.value), (rule, key, value, str(err.value))
    print(f"schema rules checked: {len(cases)} {by_rule}")


PWNED = "PWNED-shellquote"


def test_shell_metacharacters_in_config_reach_the_command_as_one_argument(tmp_path):
    evil = f"/tmp/x y'z;touch {PWNED} \"$(touch {PWNED})\" `touch {PWNED}`"
    cfg = yaml.safe_load((ROOT / "config.yaml").read_text())
    for m in cfg["models"].values():
        m["organism"] = None  # a real (not built) model: its path goes straight into the commands
    cfg["models"]["toy-qwen-math"]["path"] = evil
    # local model folders must exist before any job (config check): the evil one, and the shipped organisms
    Path(evil).mkdir(parents=True, exist_ok=True)
    (tmp_path / "workflow").symlink_to(ROOT / "workflow")
    conf = tmp_path / "evil.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    try:
        res = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "-n", "-p",
                              "--configfile", str(conf), "--directory", str(tmp_path), "evaluate_all"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=300)
    finally:
        Path(evil).rmdir()
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    commands = [line.split("Shell command:", 1)[1].strip() for line in res.stdout.splitlines()
                if "Shell command: spurious " in line]
    model_dirs = specs_with_evil = 0
    for cmd in commands:
        argv = shlex.split(cmd)  # POSIX shell word splitting, as bash does it
        for i, a in enumerate(argv):
            if a == "--model-dir" and "toy-qwen-math" in cmd:
                assert argv[i + 1] == evil  # one literal argument
                model_dirs += 1
            if a == "--spec":
                spec = json.loads(argv[i + 1])  # the whole JSON spec is one argument
                if spec.get("model", {}).get("path") == evil:
                    specs_with_evil += 1
    assert model_dirs >= 1 and specs_with_evil >= 5, res.stdout[-3000:]
    assert not (tmp_path / PWNED).exists() and not (ROOT / PWNED).exists() and not Path(PWNED).exists()


# ------------------------------------------------------------------------------------------
# 5. provenance in every summary (evaluation: see the SIGKILL test above)
# ------------------------------------------------------------------------------------------


def test_provenance_record():
    p = provenance.provenance("abc", 3)
    assert p["config_hash"] == "abc" and p["seed"] == 3
    assert set(p["packages"]) == set(provenance.PACKAGES) and p["packages"]["torch"]
    assert p["git_commit"] is None or len(p["git_commit"]) >= 7
    import socket

    assert socket.gethostname() not in json.dumps(p)
    assert provenance.provenance(None, None)["seed"] is None


def _assert_provenance(rec: dict | None, spec, seed, described: Path | None = None) -> None:
    """A full record: config hash of the job's spec, the git commit, every package version, the seed."""
    assert rec is not None, "no provenance"
    assert rec["config_hash"] == (spec if isinstance(spec, str) else provenance.spec_hash(spec))
    assert rec["seed"] == seed
    assert rec["git_commit"] == provenance.git_commit() and len(rec["git_commit"]) == 40  # this is a checkout
    assert set(rec["packages"]) == set(provenance.PACKAGES) and rec["packages"]["torch"] and rec["python"]
    if described is not None:  # a file's sidecar names the exact bytes it describes
        assert rec["sha256"] == io.file_sha256(described)


def test_sidecar_helper_for_files_and_folders(tmp_path, monkeypatch):
    spec = {"name": "x", "seed": 4}
    # a folder output (what evaluation's samples/ uses): provenance.json inside the temporary
    with io.atomic_output(tmp_path / "samples") as tmp:
        tmp.mkdir()
        io.write_jsonl([{"id": "p1", "i": 0, "response": "So 7.", "pred": "7", "correct": True, "code": False,
                        "repetition": False, "tokens": 3}], tmp / "step0_b.jsonl.gz")
        assert provenance.write_sidecar(tmp, spec, 4) == tmp / "provenance.json"
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["provenance.json", "step0_b.jsonl.gz"]
    _assert_provenance(provenance.read_sidecar(tmp_path / "samples"), spec, 4)

    assert list(samples.read_sample_dir(tmp_path / "samples")) == [(0, "b")]  # readers skip it
    # a file output through io: the sidecar is complete on disk before the file is renamed into place
    seen = []
    real_replace = io._replace

    def spy(tmp: Path, target: Path) -> None:
        if target.name == "m.jsonl":
            seen.append(io.sidecar_path(target).exists() and not target.exists())
        real_replace(tmp, target)

    monkeypatch.setattr(io, "_replace", spy)
    io.write_jsonl([{"step": 1}], tmp_path / "m.jsonl", sidecar=provenance.record(spec, 4))
    assert seen == [True]
    _assert_provenance(provenance.read_sidecar(tmp_path / "m.jsonl"), spec, 4, tmp_path / "m.jsonl")
    # a failing body publishes neither
    with pytest.raises(RuntimeError), io.atomic_output(tmp_path / "n.json", sidecar=provenance.record("h", 1)) as tmp:
        tmp.write_text("{")
        raise RuntimeError
    assert not (tmp_path / "n.json").exists() and not io.sidecar_path(tmp_path / "n.json").exists()
    # the helper on a file path, with a precomputed hash
    out = provenance.write_sidecar(tmp_path / "m.jsonl", "abc", None, sha256=io.file_sha256(tmp_path / "m.jsonl"))
    assert out == tmp_path / "m.jsonl.provenance.json"
    _assert_provenance(io.read_json(out), "abc", None, tmp_path / "m.jsonl")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.jsonl", "m.jsonl.provenance.json", "samples"]


def test_train_outputs_have_provenance(tmp_path):
    state = tmp_path / "state"
    for s in (1, 2):
        (state / "hf" / f"step_{s}").mkdir(parents=True)
        (state / "hf" / f"step_{s}" / "w.bin").write_bytes(b"w")
    row = dict.fromkeys(training.common.METRICS_KEYS)  # every key of the shared metrics row
    (state / "metrics.jsonl").write_text("\n".join(json.dumps({**row, "step": s}) for s in (1, 2)) + "\n")
    spec = {"run": "m/r/clip/seed5", "seed": 5, "checkpoint_steps": [1, 2], "grpo": {"steps": 2}}
    training.common.publish(spec, state, tmp_path / "checkpoints", tmp_path / "metrics.jsonl")
    index = io.read_json(tmp_path / "checkpoints/index.json")
    assert index["steps"] == [1, 2]
    _assert_provenance(index["provenance"], spec, 5)  # the checkpoints folder's record
    _assert_provenance(provenance.read_sidecar(tmp_path / "metrics.jsonl"), spec, 5, tmp_path / "metrics.jsonl")


@pytest.mark.slow
def test_label_majority_outputs_have_provenance(tmp_path, bench):
    """The real `spurious label-majority` (toy organism, 12 problems x 2 samples): every output has a sidecar."""
    spec = {"model": {"name": "toy", "path": str(ORGANISM), "template": "chat"}, "samples": 2, "temperature": 1.0,
            "max_new_tokens": 32, "template": "model", "seed": 11, "engine": "hf", "grading_workers": 1}
    outs = {"majority": tmp_path / "mv.jsonl", "incorrect": tmp_path / "inc.jsonl", "samples": tmp_path / "s.jsonl.gz"}
    res = subprocess.run([*CLI, "label-majority", "--spec", json.dumps(spec), "--data", str(bench),
                          *(x for k, p in outs.items() for x in (f"--out-{k}", str(p)))],
                         env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    for p in outs.values():
        _assert_provenance(provenance.read_sidecar(p), spec, 11, p)
        assert list(io.iter_jsonl(p))  # readers see the data file unchanged
    assert len(data.load_records(outs["majority"])) == 12
    assert "'seed': 11" in res.stderr and provenance.spec_hash(spec) in res.stderr  # the stats, logged
