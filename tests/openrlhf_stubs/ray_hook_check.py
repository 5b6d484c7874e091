"""The launcher's Ray hook in a real (local, CPU) Ray worker (runs inside the isolated OpenRLHF venv).

Usage: ``ray_hook_check.py OUT.json``. Wraps ``ray.init`` as the launcher does, calls it as
OpenRLHF's ``train`` does (its own ``env_vars``), and asks a Ray task, in another process,
whether OpenRLHF's modules it imports there carry the patches. Writes the task's answer
and the driver's pid to OUT.json.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main() -> int:
    from spurious_rewards.training import openrlhf_patches as P

    opts = P.parse_options({"stop": ["</answer>"], "advantage_whitening": "batch_token", "prompt_seed": 3})
    P._hook_ray_init(opts)  # what main() does before handing over to train_ppo_ray
    import ray

    ray.init(num_cpus=1, include_dashboard=False, runtime_env={"env_vars": {"TOKENIZERS_PARALLELISM": "true"}})

    @ray.remote
    def probe() -> dict:
        from openrlhf.trainer import ppo_trainer
        from openrlhf.trainer.ppo_utils import samples_generator

        from spurious_rewards.training import openrlhf_patches as Q

        sp = samples_generator.SamplingParams(temperature=1.0)
        return {"pid": os.getpid(), "stop": sp.stop, "include_stop_str_in_output": sp.include_stop_str_in_output,
                "prepare_datasets_wrapped": hasattr(ppo_trainer.prepare_datasets, "original"),
                "applied": Q.applied()}

    try:
        result = ray.get(probe.remote(), timeout=300)
    finally:
        ray.shutdown()
    Path(sys.argv[1]).write_text(json.dumps({"worker": result, "driver_pid": os.getpid()}), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
