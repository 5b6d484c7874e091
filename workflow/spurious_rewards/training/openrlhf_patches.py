"""The authors' behaviours OpenRLHF 0.11.2 lacks, patched into its trainer process, and the launcher.

OpenRLHF 0.11.2 has no option for three things the authors' runs did, so
:mod:`spurious_rewards.openrlhf` launches it through this module::

    python -m spurious_rewards.training.openrlhf_patches --spurious.fidelity '<json>' <OpenRLHF flags>

which installs the patches below and then runs ``openrlhf.cli.train_ppo_ray`` exactly as
``python -m`` would (same parser, same checks, same ``train``). ``<json>`` is
:func:`fidelity_options`: ``{"stop": [...], "advantage_whitening": "none"|"batch_token",
"prompt_seed": int|null}``.

Where the patches must act: OpenRLHF's ``PPOTrainer`` is a Ray actor (the "single
controller"); the prompt loader, the vLLM ``SamplingParams`` (``SamplesGenerator``) and the
advantages (``RemoteExperienceMaker``) all live in *that* process, not in the driver that
parses the flags. So the driver adds a job-level Ray ``worker_process_setup_hook``
(:func:`worker_setup`, by module path; the options travel in the environment variable
:data:`OPTIONS_ENV`) to the ``ray.init`` OpenRLHF makes. Every Ray worker runs it at start
and registers post-import hooks, so each patch is applied right after OpenRLHF's own module
is imported, in whichever worker imports it, and nothing extra is imported early (vLLM and
CUDA are sensitive to what a worker imports before its GPU is assigned). A patch whose
target is missing raises, so a changed OpenRLHF fails at start instead of training without
the patch.

The patches (each a wrapper around OpenRLHF's own function, not a copy of it):

* **stop strings** (``stop``; r1 templates: ``["</answer>"]``): ``SamplingParams`` in
  ``openrlhf.trainer.ppo_utils.samples_generator`` gets ``stop`` and
  ``include_stop_str_in_output=True``, as the authors' ``--stop_string``. vLLM then ends
  the response at the stop (kept), so its tokens, action mask, reward text and loss end
  there; OpenRLHF appends no EOS to a vLLM response (``SingleTurnAgentExecutor``).
* **advantage whitening** (``advantage_whitening: batch_token``):
  ``RemoteExperienceMaker.compute_advantages_and_returns`` is followed by the authors'
  token-weighted whitening over the whole rollout (:func:`grpo_math.whiten_advantages`).
  The controller holds every rank's experiences at that point, so this is the authors'
  all-rank statistic. OpenRLHF whitens ``gae``/``reinforce``/``reinforce_baseline`` itself;
  for those the patch refuses to whiten twice.
* **prompt order** (``prompt_seed``): the controller builds its prompt loader without
  ``torch.distributed``, so OpenRLHF's ``setup_dataloader`` gives it a ``shuffle=True``
  ``StatefulDataLoader`` whose ``RandomSampler`` draws its generator seed from the
  process's unseeded torch RNG: two runs with one ``--train.seed`` saw different orders.
  The patch wraps ``openrlhf.trainer.ppo_trainer.prepare_datasets`` and seeds that
  sampler's generator with ``prompt_seed`` before the first epoch is drawn. Resuming stays
  exact: the loader's saved state holds the generator state and the position.

Only the synchronous trainer (``openrlhf.trainer.ppo_trainer``) is patched; the async one
(``--train.async_enable``) is refused. This module imports only the standard library at
top level: it is imported in every Ray worker and in the OpenRLHF venv.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import json
import os
import runpy
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

#: The launcher's own flag (its value is the options JSON); removed before OpenRLHF parses.
FLAG = "--spurious.fidelity"
#: Environment variable carrying the options JSON to the Ray workers.
OPTIONS_ENV = "SPURIOUS_OPENRLHF_FIDELITY"
#: The module ``python -m`` runs (this one) and the OpenRLHF entry point it hands over to.
LAUNCHER = "spurious_rewards.training.openrlhf_patches"
OPENRLHF_ENTRY = "openrlhf.cli.train_ppo_ray"
#: Modules patched, and the patch names (reported by :func:`applied`).
SAMPLES_GENERATOR = "openrlhf.trainer.ppo_utils.samples_generator"
EXPERIENCE_MAKER = "openrlhf.trainer.ppo_utils.experience_maker"
PPO_TRAINER = "openrlhf.trainer.ppo_trainer"
#: Estimators OpenRLHF 0.11 already whitens across the batch.
_SELF_WHITENED = ("gae", "reinforce", "reinforce_baseline")

_KEYS = {"stop", "advantage_whitening", "prompt_seed"}
_lock = threading.Lock()
_applied: dict[str, str] = {}


# ---------------------------------------------------------------------------
# options
# ---------------------------------------------------------------------------


def fidelity_options(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The patch options of one run spec (stop strings of its template, whitening, prompt seed)."""
    from .. import templates

    template = spec["model"]["template"]
    return {
        "stop": templates.stop_strings(template) if templates.is_r1(template) else [],
        "advantage_whitening": spec["grpo"].get("advantage_whitening", "none"),
        "prompt_seed": int(spec["seed"]),
    }


def parse_options(value: str | Mapping[str, Any]) -> dict[str, Any]:
    """Validated options from their JSON (or a dict); ValueError names the bad key and the allowed values."""
    from ..grpo_math import check_whitening

    try:
        opts = json.loads(value) if isinstance(value, str) else dict(value)
    except ValueError as exc:
        raise ValueError(f"{FLAG}: not JSON ({exc})") from None
    if not isinstance(opts, dict):
        raise ValueError(f"{FLAG}: expected a JSON object with keys {sorted(_KEYS)}")
    unknown = set(opts) - _KEYS
    if unknown:
        raise ValueError(f"{FLAG}: unknown keys {sorted(unknown)}; allowed: {sorted(_KEYS)}")
    stop = opts.get("stop") or []
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise ValueError(f"{FLAG}: 'stop' must be a list of non-empty strings, got {stop!r}")
    seed = opts.get("prompt_seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise ValueError(f"{FLAG}: 'prompt_seed' must be an integer or null, got {seed!r}")
    return {"stop": list(stop), "advantage_whitening": check_whitening(opts.get("advantage_whitening", "none")),
            "prompt_seed": seed}


def split_argv(argv: Sequence[str]) -> tuple[dict[str, Any], list[str]]:
    """(options, OpenRLHF's argv): our flag taken out (``FLAG VALUE`` or ``FLAG=VALUE``), exactly once."""
    rest: list[str] = []
    found: list[str] = []
    it = iter(argv)
    for a in it:
        if a == FLAG:
            try:
                found.append(next(it))
            except StopIteration:
                raise ValueError(f"{FLAG} needs a value") from None
        elif a.startswith(FLAG + "="):
            found.append(a[len(FLAG) + 1 :])
        else:
            rest.append(a)
    if len(found) != 1:
        raise ValueError(f"expected {FLAG} exactly once, found it {len(found)} times")
    return parse_options(found[0]), rest


# ---------------------------------------------------------------------------
# the patches (each takes the imported OpenRLHF module)
# ---------------------------------------------------------------------------


def _mark(module: Any, name: str) -> bool:
    """True the first time ``name`` is applied to ``module`` (patches are idempotent)."""
    done = module.__dict__.setdefault("_spurious_patches", set())
    if name in done:
        return False
    done.add(name)
    with _lock:
        _applied[name] = module.__name__
    return True


def _require(module: Any, attr: str) -> Any:
    obj = getattr(module, attr, None)
    if obj is None:
        raise RuntimeError(f"{module.__name__}.{attr} not found: OpenRLHF changed; the {LAUNCHER} patch "
                           "cannot be applied (this launcher targets OpenRLHF 0.11.2)")
    return obj


def patch_stop_strings(module: Any, stop: Sequence[str]) -> None:
    """``module.SamplingParams(...)`` also gets ``stop`` and ``include_stop_str_in_output=True``."""
    if not stop or not _mark(module, "stop_strings"):
        return
    base = _require(module, "SamplingParams")
    stops = list(stop)

    def sampling_params_with_stop(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("stop") not in (None, [], stops):
            raise ValueError(f"SamplingParams already has stop={kwargs['stop']!r}; refusing to override")
        kwargs["stop"] = list(stops)
        kwargs["include_stop_str_in_output"] = True
        return base(*args, **kwargs)

    sampling_params_with_stop.base = base  # type: ignore[attr-defined]
    module.SamplingParams = sampling_params_with_stop


def patch_whitening(module: Any, mode: str) -> None:
    """``RemoteExperienceMaker.compute_advantages_and_returns`` followed by the authors' whitening."""
    if mode == "none" or not _mark(module, "advantage_whitening"):
        return
    cls = _require(module, "RemoteExperienceMaker")
    original = _require(cls, "compute_advantages_and_returns")

    def compute_advantages_and_returns(self: Any, experiences: list, *args: Any, **kwargs: Any) -> list:
        experiences = original(self, experiences, *args, **kwargs)
        estimator = self.strategy.args.algo.advantage.estimator
        if estimator in _SELF_WHITENED:
            raise ValueError(f"advantage_whitening={mode!r} with estimator {estimator!r}: OpenRLHF whitens "
                             "those itself; whitening twice is not the authors' update")
        whiten_experiences(experiences)
        return experiences

    compute_advantages_and_returns.original = original  # type: ignore[attr-defined]
    cls.compute_advantages_and_returns = compute_advantages_and_returns


def whiten_experiences(experiences: Sequence[Any]) -> tuple[float, float]:
    """Whiten ``exp.advantages`` in place over every action token of ``experiences``; return (mean, rstd)."""
    import torch

    from ..grpo_math import whitening_stats

    adv = torch.cat([e.advantages.flatten() for e in experiences]).unsqueeze(0)
    mask = torch.cat([e.action_mask.flatten() for e in experiences]).unsqueeze(0)
    mean, rstd = whitening_stats(adv, mask)
    for e in experiences:
        e.advantages = ((e.advantages.to(mean.dtype) - mean) * rstd).to(e.advantages.dtype)
    return float(mean), float(rstd)


def patch_prompt_order(module: Any, seed: int | None) -> None:
    """Seed the controller's prompt sampler: wraps ``module.prepare_datasets``."""
    if seed is None or not _mark(module, "prompt_order"):
        return
    original = _require(module, "prepare_datasets")

    def prepare_datasets(strategy: Any, tokenizer: Any) -> Any:
        prompts_dataloader, eval_dataloader, max_steps = original(strategy, tokenizer)
        seed_prompt_loader(prompts_dataloader, seed)
        return prompts_dataloader, eval_dataloader, max_steps

    prepare_datasets.original = original  # type: ignore[attr-defined]
    module.prepare_datasets = prepare_datasets


def seed_prompt_loader(loader: Any, seed: int) -> None:
    """Seed a shuffling loader's ``RandomSampler`` generator (a seeded DistributedSampler is left alone)."""
    sampler = getattr(loader, "sampler", None)
    generator = getattr(sampler, "generator", None)
    if generator is not None:
        generator.manual_seed(int(seed))
        return
    if hasattr(sampler, "seed"):  # DistributedSampler: OpenRLHF seeds it with --train.seed already
        return
    raise RuntimeError(f"prompt loader sampler {type(sampler).__name__} has no generator to seed")


def _refuse_async(module: Any) -> None:
    raise RuntimeError(f"{LAUNCHER}: the async trainer ({module.__name__}) is not patched; "
                       "drop --train.async_enable")


def _patches(options: Mapping[str, Any]) -> dict[str, Callable[[Any], None]]:
    out: dict[str, Callable[[Any], None]] = {}
    if options["stop"]:
        out[SAMPLES_GENERATOR] = lambda m: patch_stop_strings(m, options["stop"])
    if options["advantage_whitening"] != "none":
        out[EXPERIENCE_MAKER] = lambda m: patch_whitening(m, options["advantage_whitening"])
    if options["prompt_seed"] is not None:
        out[PPO_TRAINER] = lambda m: patch_prompt_order(m, options["prompt_seed"])
    if out:
        out["openrlhf.trainer.ppo_trainer_async"] = _refuse_async
    return out


# ---------------------------------------------------------------------------
# post-import hooks
# ---------------------------------------------------------------------------


class _HookedLoader(importlib.abc.Loader):
    """Runs the module's own loader, then the patch."""

    def __init__(self, loader: Any, hook: Callable[[Any], None]) -> None:
        self._loader, self._hook = loader, hook

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        self._loader.exec_module(module)
        self._hook(module)

    def __getattr__(self, name: str) -> Any:  # get_source, get_filename, is_package, ...
        return getattr(self._loader, name)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """A ``sys.meta_path`` entry that wraps the loader of the hooked module names."""

    def __init__(self) -> None:
        self.hooks: dict[str, Callable[[Any], None]] = {}

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        hook = self.hooks.get(fullname)
        if hook is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _HookedLoader(spec.loader, hook)
                return spec
        return None


_finder = _PostImportFinder()


def install(options: Mapping[str, Any]) -> list[str]:
    """Apply the patches to modules already imported and hook those not yet imported; return the hooked names."""
    patches = _patches(options)
    with _lock:
        if patches and _finder not in sys.meta_path:
            sys.meta_path.insert(0, _finder)
        _finder.hooks.update({k: v for k, v in patches.items() if k not in sys.modules})
    for name, fn in patches.items():
        if name in sys.modules:
            fn(sys.modules[name])
    return sorted(patches)


def applied() -> dict[str, str]:
    """``{patch name: module}`` of the patches applied in this process so far."""
    with _lock:
        return dict(_applied)


def check_targets(options: Mapping[str, Any]) -> dict[str, str]:
    """Import every module the options patch (not the async trainer) and return :func:`applied` (CI check)."""
    install(options)
    import importlib

    for name in _patches(options):
        if name != "openrlhf.trainer.ppo_trainer_async":
            importlib.import_module(name)
    return applied()


def worker_setup() -> None:
    """Ray's ``worker_process_setup_hook``: install the patches of :data:`OPTIONS_ENV` in this worker."""
    text = os.environ.get(OPTIONS_ENV)
    if not text:
        raise RuntimeError(f"{OPTIONS_ENV} is not set in this Ray worker; the OpenRLHF patches cannot be installed")
    install(parse_options(text))


def _hook_ray_init(options: Mapping[str, Any]) -> None:
    """Make OpenRLHF's own ``ray.init`` carry our worker setup hook and options (driver only)."""
    import ray

    original = ray.init
    text = json.dumps(dict(options), sort_keys=True)

    def init(*args: Any, **kwargs: Any) -> Any:
        env = dict(kwargs.get("runtime_env") or {})
        if env.get("worker_process_setup_hook"):
            raise RuntimeError("ray.init already has a worker_process_setup_hook; cannot add the OpenRLHF patches")
        env["worker_process_setup_hook"] = f"{LAUNCHER}.worker_setup"
        env_vars = dict(env.get("env_vars") or {})
        env_vars[OPTIONS_ENV] = text
        if os.environ.get("PYTHONPATH"):  # workers must import this package
            env_vars.setdefault("PYTHONPATH", os.environ["PYTHONPATH"])
        env["env_vars"] = env_vars
        kwargs["runtime_env"] = env
        return original(*args, **kwargs)

    ray.init = init


def main(argv: Sequence[str] | None = None) -> None:
    """The launcher: take our flag out, install the patches, run OpenRLHF's ``train_ppo_ray`` as ``__main__``."""
    options, rest = split_argv(sys.argv[1:] if argv is None else argv)
    os.environ[OPTIONS_ENV] = json.dumps(options, sort_keys=True)
    install(options)
    _hook_ray_init(options)
    sys.argv = [OPENRLHF_ENTRY, *rest]
    runpy.run_module(OPENRLHF_ENTRY, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
