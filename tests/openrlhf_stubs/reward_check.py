"""Score responses through OpenRLHF's own reward path (runs inside the isolated OpenRLHF venv).

Usage: ``reward_check.py REQUEST.json OUT.json``. The request is ``{"jobs": [{"reward_file":
path, "loads": k, "cases": [{"prompt", "response", "label"}, ...]}, ...]}`` (one process for
all jobs: importing OpenRLHF is the slow part). For each of ``k`` fresh loads, OpenRLHF's ``SingleTurnAgentExecutor(remote_rm_url=reward_file)`` imports the file
(``spec_from_file_location``, as in every vLLM engine actor), then ``execute`` runs every
case concurrently with ``asyncio.gather`` (the rewards run in ``asyncio.to_thread``
threads, as in training) against a fake engine that "generates" the case's response.
The tokenizer is character-level, so the query OpenRLHF decodes is exactly prompt +
response. Each output also goes through ``SamplesGenerator._process_response_into_experience``
so the return types are checked where OpenRLHF consumes them. Writes ``{"jobs": [{"loads":
[[{reward, score, extra_logs, info_keys, seconds}, ...], ...], "wall": [...]}, ...]}``.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from types import SimpleNamespace
from typing import Any

import torch


class CharTokenizer:
    """One token per character: decode(encode(s)) == s, special-token strings included."""

    def __call__(self, text: str, add_special_tokens: bool = False, return_tensors: str | None = None) -> dict:
        ids = [ord(c) for c in text]
        return {"input_ids": torch.tensor([ids]) if return_tensors == "pt" else [ids]}

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        return "".join(chr(int(i)) for i in ids)


class FakeEngine:
    """Returns a fixed response for each prompt, after a tiny await (so calls interleave)."""

    def __init__(self, responses: dict[str, list[str]]) -> None:
        self.responses = {k: list(v) for k, v in responses.items()}

    async def generate(self, prompt_token_ids: list[int], params: Any, multi_modal_data: Any = None) -> Any:
        await asyncio.sleep(0)
        prompt = "".join(chr(i) for i in prompt_token_ids)
        text = self.responses[prompt].pop(0)
        out = SimpleNamespace(token_ids=[ord(c) for c in text], finish_reason="stop", logprobs=None)
        return SimpleNamespace(outputs=[out])


def _scalar(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return float(x.flatten()[0])
    return x


async def run_cases(reward_file: str, cases: list[dict]) -> list[dict]:
    from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator
    from openrlhf.utils.agent import SingleTurnAgentExecutor

    executor = SingleTurnAgentExecutor(remote_rm_url=reward_file)
    assert executor.reward_func is not None, "the .py reward file was not loaded as a function"
    responses: dict[str, list[str]] = {}
    for c in cases:
        responses.setdefault(c["prompt"], []).append(c["response"])
    engine = FakeEngine(responses)
    tok = CharTokenizer()
    params = SimpleNamespace(max_tokens=1 << 20, logprobs=None)

    async def one(case: dict) -> dict:
        t0 = time.monotonic()
        out = await executor.execute(case["prompt"], case["label"], params, 1 << 21, tok, engine)
        seconds = time.monotonic() - t0
        exp = SamplesGenerator._process_response_into_experience(None, out, max_len=1 << 21)
        return {
            "reward": _scalar(out["reward"]),
            "score": _scalar(out["scores"]),
            "extra_logs": {k: _scalar(v) for k, v in (out["extra_logs"] or {}).items()},
            "info_keys": sorted(exp.info),
            "seconds": seconds,
        }

    return list(await asyncio.gather(*(one(c) for c in cases)))


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as fh:
        request = json.load(fh)
    jobs = []
    for job in request["jobs"]:
        loads, wall = [], []
        for _ in range(int(job.get("loads", 1))):
            t0 = time.monotonic()
            loads.append(asyncio.run(run_cases(job["reward_file"], job["cases"])))
            wall.append(time.monotonic() - t0)
        jobs.append({"loads": loads, "wall": wall})
    with open(sys.argv[2], "w", encoding="utf-8") as fh:
        json.dump({"jobs": jobs}, fh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
