"""Reliability: killed jobs, concurrent writers, hostile model output, bad config, provenance.

See RELIABILITY.md for the guarantees each test proves. Everything here is deterministic
(fixed seeds, fixed corpora; kills are triggered by observed state, never by luck) and
runs on CPU in well under two minutes.
"""

from __future__ import annotations

import copy
import json
import os
import shlex
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import yaml

from spurious_rewards import classify, config, data, grading, io, labels, provenance, rewards, train

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hostile_corpus import MEGABYTE, hostile_corpus, marker_payloads  # noqa: E402

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
    assert _leftovers(tmp_path) == ["big.jsonl"]
    assert sum(1 for _ in io.iter_jsonl(target)) == 300_000


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
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d0.jsonl", "d1.jsonl"]
    for i, s in enumerate(specs):
        ref = tmp_path.parent / f"ref{i}-{tmp_path.name}.jsonl"
        data.prepare_to_file(s, ref)
        assert (tmp_path / f"d{i}.jsonl").read_bytes() == ref.read_bytes()


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


@pytest.mark.parametrize("spec", REWARD_SPECS)
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
    code = [classify.is_code(t) for t in corpus]
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
            classify.is_code(t)
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
    conf = tmp_path / "evil.yaml"
    conf.write_text(yaml.safe_dump(cfg))
    res = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile", str(ROOT / "Snakefile"), "-n", "-p",
                          "--configfile", str(conf), "--directory", str(tmp_path), "evaluate_all"],
                         cwd=tmp_path, capture_output=True, text=True, timeout=300)
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


def test_train_index_json_has_provenance(tmp_path):
    state = tmp_path / "state"
    for s in (1, 2):
        (state / "hf" / f"step_{s}").mkdir(parents=True)
        (state / "hf" / f"step_{s}" / "w.bin").write_bytes(b"w")
    (state / "metrics.jsonl").write_text("\n".join(json.dumps({"step": s}) for s in (1, 2)) + "\n")
    spec = {"run": "m/r/clip/seed5", "seed": 5, "checkpoint_steps": [1, 2], "grpo": {"steps": 2}}
    train.publish(spec, state, tmp_path / "checkpoints", tmp_path / "metrics.jsonl")
    index = io.read_json(tmp_path / "checkpoints/index.json")
    assert index["steps"] == [1, 2] and index["provenance"]["seed"] == 5
    assert index["provenance"]["config_hash"] == provenance.spec_hash(spec)


def test_labels_stats_have_provenance(tmp_path, bench, monkeypatch):
    class FakeEngine:
        tokenizer = None

        def generate(self, prompts, n, **kw):
            return [["\\boxed{-1}"] * n for _ in prompts]  # always wrong: every problem is 'incorrect'

    monkeypatch.setattr(labels.generation, "make_engine", lambda *a, **k: FakeEngine())
    spec = {"model": {"name": "toy", "path": str(ORGANISM), "template": "chat"}, "samples": 2, "temperature": 1.0,
            "max_new_tokens": 8, "template": "plain", "seed": 11, "engine": "hf", "grading_workers": 1}
    stats = labels.label_majority(spec, data_path=bench, out_majority=tmp_path / "mv.jsonl",
                                  out_incorrect=tmp_path / "inc.jsonl", out_samples=tmp_path / "s.jsonl.gz")
    assert stats["provenance"]["seed"] == 11 and stats["provenance"]["config_hash"] == provenance.spec_hash(spec)
    json.dumps(stats)  # JSON-ready
