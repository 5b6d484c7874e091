"""The launcher's patches on the real OpenRLHF 0.11.2 (runs inside the isolated OpenRLHF venv).

Usage: ``fidelity_check.py REQUEST.json OUT.json``. REQUEST: ``{"rewards": [[...], ...] (one
group per prompt), "lengths": [[...], ...] (response tokens per sample), "prompt_lens":
[...], "eps": float, "seed": int}``. Runs, with the patches installed
(``spurious_rewards.training.openrlhf_patches``):

* OpenRLHF's own ``SamplesGenerator`` module ``SamplingParams`` (vllm stub: keeps kwargs);
* OpenRLHF's own ``RemoteExperienceMaker.compute_advantages_and_returns`` (group_norm) on
  real ``Experience`` micro-batches, then OpenRLHF's own ``PolicyLoss`` (token-mean) on them;
* OpenRLHF's own ``DeepspeedStrategy.setup_dataloader`` (no torch.distributed, as in its Ray
  controller) and the patched ``prepare_datasets``'s seeding, twice, plus a resume;

and writes what came out to OUT.json; the test compares it with a by-hand computation.
"""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace as NS


def main() -> int:
    from pathlib import Path

    req = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    import torch

    from spurious_rewards.training import openrlhf_patches as P

    opts = P.parse_options({"stop": ["</answer>"], "advantage_whitening": "batch_token", "prompt_seed": req["seed"]})
    out: dict = {"applied": P.check_targets(opts)}

    from openrlhf.models.loss import PolicyLoss
    from openrlhf.trainer import ppo_trainer
    from openrlhf.trainer.ppo_utils import samples_generator
    from openrlhf.trainer.ppo_utils.experience import Experience
    from openrlhf.trainer.ppo_utils.experience_maker import RemoteExperienceMaker
    from openrlhf.trainer.ppo_utils.kl_controller import FixedKLController
    from openrlhf.utils.deepspeed.deepspeed import DeepspeedStrategy

    # 1. stop strings
    sp = samples_generator.SamplingParams(temperature=1.0, top_p=1.0, max_tokens=8)
    out["sampling"] = {k: getattr(sp, k, None) for k in ("stop", "include_stop_str_in_output", "temperature")}

    # 2. advantages: OpenRLHF's group_norm + the patched whitening, on micro-batches of 2
    rewards, lengths, plens = req["rewards"], req["lengths"], req["prompt_lens"]
    n = len(rewards[0])
    samples = []
    for g, (rs, ls) in enumerate(zip(rewards, lengths, strict=True)):
        for r, length in zip(rs, ls, strict=True):
            total = plens[g] + length
            mask = torch.zeros(total - 1, dtype=torch.bool)
            mask[plens[g] - 1 :] = True  # action_mask = mask over sequence[1:]
            samples.append(Experience(
                sequences=torch.zeros(1, total, dtype=torch.long),
                attention_mask=torch.ones(1, total, dtype=torch.long),
                action_mask=mask.unsqueeze(0),
                rewards=torch.tensor([float(r)]),
                info={},
            ))
    micro = []
    for i in range(0, len(samples), 2):
        e = Experience.concat_experiences(samples[i : i + 2], 0)
        e.index = [i, i + 1]
        e.kl = torch.zeros(e.action_mask.shape)
        micro.append(e)
    args = NS(
        rollout=NS(n_samples_per_prompt=n, max_new_tokens=None),
        algo=NS(advantage=NS(estimator="group_norm", gamma=1.0, lambd=1.0, no_std_norm=False), kl=NS(use_loss=False)),
        reward=NS(clip_range=(-10.0, 10.0), overlong_buffer_len=None, stop_properly_penalty_coef=None),
        data=NS(max_len=4096),
    )
    maker = RemoteExperienceMaker.__new__(RemoteExperienceMaker)
    maker.strategy, maker.args, maker.advantage_estimator = NS(args=args), args, "group_norm"
    maker.kl_ctl = FixedKLController(0.0)
    exps = maker.compute_advantages_and_returns(micro)
    per_sample = []
    for e in exps:
        for row, m in zip(e.advantages, e.action_mask, strict=True):
            vals = row[m.bool()].tolist()
            per_sample.append({"first": vals[0], "all_equal": max(vals) - min(vals) < 1e-6, "n": len(vals)})
    out["advantages"] = per_sample

    # 3. PolicyLoss token-mean (no_clip-free: eps from the request) on ratio = exp(delta)
    torch.manual_seed(0)
    loss_fn = PolicyLoss(clip_eps_low=req["eps"], clip_eps_high=req["eps"], token_level_loss=True)
    adv = torch.cat([e.advantages.flatten() for e in exps])
    mask = torch.cat([e.action_mask.flatten() for e in exps]).float()
    delta = (torch.arange(adv.numel(), dtype=torch.float32) % 7 - 3) * 0.1  # ratios 0.74..1.35: clipping binds
    loss = loss_fn(delta.unsqueeze(0), torch.zeros(1, adv.numel()), adv.unsqueeze(0), mask.unsqueeze(0))
    loss = loss[0] if isinstance(loss, tuple) else loss
    out["policy_loss"] = {"loss": float(loss), "delta": delta.tolist(), "adv": adv.tolist(), "mask": mask.tolist()}

    # 4. prompt order: OpenRLHF's own setup_dataloader without torch.distributed, seeded by the patch
    def order(seed_loader: bool, resume_after: int | None = None) -> list[int]:
        dataset = list(range(50))
        loader = DeepspeedStrategy.setup_dataloader(NS(), dataset, 1, False, True, lambda b: b)
        if seed_loader:
            P.seed_prompt_loader(loader, req["seed"])
        it = iter(loader)
        got = [next(it)[0] for _ in range(50 if resume_after is None else resume_after)]
        if resume_after is not None:
            state = loader.state_dict()
            again = DeepspeedStrategy.setup_dataloader(NS(), dataset, 1, False, True, lambda b: b)
            again.load_state_dict(state)
            got += [b[0] for b in again]
        return got

    out["order"] = {"seeded": [order(True), order(True)], "resumed": order(True, resume_after=17),
                    "unseeded": [order(False), order(False)],
                    "prepare_datasets_wrapped": hasattr(ppo_trainer.prepare_datasets, "original")}
    Path(sys.argv[2]).write_text(json.dumps(out), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
