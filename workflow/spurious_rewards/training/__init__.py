"""GRPO training per (model, reward, variant, seed), behind one backend interface.

``BACKENDS`` maps the config's ``backend`` to its implementation (imported lazily: the
OpenRLHF backend needs none of TRL, and the TRL backend none of Ray). Every backend is a
:class:`~.common.Backend`: it trains into a state folder bound to its spec, and
:func:`~.common.publish` moves the result to the rule's outputs.
"""

from __future__ import annotations

import importlib
from pathlib import Path

from .common import bind_state, publish

#: backend name -> "module:function" (a new backend is one entry here and one in the schema's enum)
BACKENDS: dict[str, str] = {
    "trl": "spurious_rewards.training.trl_backend:train_trl",
    "openrlhf": "spurious_rewards.training.openrlhf_backend:train_openrlhf",
}


def backend(name: str):
    """The implementation of backend ``name``."""
    if name not in BACKENDS:  # the schema forbids it; guard for hand-written specs
        raise ValueError(f"backend: {name!r} is not allowed; allowed values: {', '.join(BACKENDS)}")
    module, func = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), func)


def train(spec: dict, *, data_path: str | Path, state_dir: str | Path, out_checkpoints: str | Path,
          out_metrics: str | Path) -> None:
    """Train one run with the configured backend and publish its checkpoints and metrics."""
    run = backend(spec.get("backend", "trl"))
    state = Path(state_dir)
    bind_state(spec, state)
    run(spec, data_path=Path(data_path), state_dir=state)
    publish(spec, state, Path(out_checkpoints), Path(out_metrics))
