"""Config loading, validation and the experiment grid.

The same validation runs in ``workflow/rules/common.smk`` (before Snakemake
plans anything), in ``spurious check-config`` and in every CLI entry point, so
a bad config fails before any job runs, with the key, the bad value and what is
allowed. Why not ``snakemake.utils.validate`` alone: its messages name the
schema path, not the user's key, and say nothing about cross-references
(a reward naming a variant that does not exist).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from jsonschema import Draft202012Validator, validators

from . import paths

#: The schema is package data: a plain (non-editable) ``pip install .`` can validate a config.
SCHEMA_PATH = Path(__file__).resolve().parent / "schemas" / "config.schema.yaml"

#: epsilon that can never bind (the ratio is at most e^20 in practice): the ``no_clip`` variant.
NO_CLIP_EPSILON = 1e9

#: the key naming the study file a config overlays (resolved on read, never validated)
EXTENDS = "extends"
#: an overlay's list of dotted keys whose mapping replaces the base's instead of merging into it
REPLACE = "replace"


class ConfigError(ValueError):
    """A config that cannot run; the message names the key, the value and what is allowed."""


def _with_defaults(cls: type) -> type:
    """A validator that also fills ``default:`` values (the jsonschema FAQ recipe)."""
    validate_properties = cls.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for prop, sub in properties.items():
                if isinstance(sub, dict) and "default" in sub and prop not in instance:
                    instance[prop] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return validators.extend(cls, {"properties": set_defaults})


_DefaultingValidator = _with_defaults(Draft202012Validator)


def load_schema() -> dict:
    """The config schema (package data), parsed."""
    with open(SCHEMA_PATH) as fh:
        return yaml.safe_load(fh)


def _key_path(path: Any) -> str:
    return ".".join(str(p) for p in path) or "<top level>"


def _allowed_keys(schema: dict) -> list[str]:
    return sorted(schema.get("properties", {}))


def _describe(error) -> str:
    """Turn one jsonschema error into 'key: problem; allowed: ...'."""
    where = _key_path(error.absolute_path)
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = set(error.schema.get("properties", {}))
        unknown = sorted(k for k in error.instance if k not in known)
        prefix = f"{where}." if error.absolute_path else ""
        return (
            f"unknown key {', '.join(repr(prefix + k) for k in unknown)}; "
            f"allowed keys{' under ' + repr(where) if error.absolute_path else ''}: "
            f"{', '.join(_allowed_keys(error.schema))}"
        )
    if error.validator == "enum":
        return f"{where}: {error.instance!r} is not allowed; allowed values: {', '.join(map(str, error.validator_value))}"
    if error.validator == "required":
        return f"{where}: {error.message}"
    if error.validator == "propertyNames":
        return f"{where}: bad name {error.instance!r}: names may use letters, digits, '.', '_' and '-' only"
    return f"{where}: {error.message}"


def schema_problems(instance: Any, definition: str) -> list[tuple[str, str]]:
    """Validate ``instance`` against ``#/$defs/<definition>`` of the schema, filling defaults in place.

    Returns ``(top-level key, message)`` per problem (key ``""`` for the object itself), so a
    job that checks its own spec (e.g. the dataset loaders) reports the same messages as the
    config validation, from the same single definition.
    """
    schema = load_schema()
    validator = _DefaultingValidator({"$ref": f"#/$defs/{definition}", "$defs": schema["$defs"]})
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(map(str, e.absolute_path)))
    out: dict[tuple[str, str], None] = {}
    for e in errors:
        key = str(e.absolute_path[0]) if e.absolute_path else ""
        if not key and e.validator == "additionalProperties" and isinstance(e.instance, dict):
            known = set(e.schema.get("properties", {}))
            key = next((k for k in e.instance if k not in known), "")
        out[(key, _describe(e))] = None
    return list(out)


def definition_keys(definition: str, kind: str | None = None) -> set[str]:
    """The keys ``#/$defs/<definition>`` accepts (for one ``kind`` when its branches are per kind)."""
    d = load_schema()["$defs"][definition]
    keys = set(d.get("properties", {}))
    if kind is None:
        return keys
    for branch in d.get("allOf", []):
        if branch.get("if", {}).get("properties", {}).get("kind", {}).get("const") == kind:
            return set(branch["then"].get("properties", keys))
    return keys


def validate(config: dict) -> dict:
    """Validate and fill defaults in place; raise :class:`ConfigError` listing every problem."""
    if not isinstance(config, dict):
        raise ConfigError(f"config must be a mapping, got {type(config).__name__}")
    schema = load_schema()
    coerce_numbers(config, schema, schema)
    validator = _DefaultingValidator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if errors:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(dict.fromkeys(_describe(e) for e in errors)))
    # well-formed (the schema describes them) but never resolved here: that needs the file's path
    for key in (EXTENDS, REPLACE):
        if key in config:
            raise ConfigError(
                f"{key}: {config[key]!r} is not resolved: read the file with spurious_rewards.config.load "
                "or read (the Snakefile and `spurious check-config` do)"
            )
    _check_references(config)
    return config


_FLOAT = re.compile(r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$")


def coerce_numbers(instance: Any, schema: dict, root: dict) -> None:
    """Turn numeric strings into numbers where the schema wants a number, in place.

    Why: YAML 1.1 (PyYAML, and so Snakemake) reads ``lr: 1e-4`` as the *string* "1e-4"
    (its float syntax needs a dot: ``1.0e-4``). Every such value is a number the user meant,
    so it is converted rather than rejected as "not a number".
    """
    if "$ref" in schema:
        ref = schema["$ref"]
        if ref.startswith("#/$defs/"):
            coerce_numbers(instance, root["$defs"][ref.split("/")[-1]], root)
        return
    if not isinstance(instance, dict):
        return
    props = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    for key, value in list(instance.items()):
        sub = props.get(key, extra if isinstance(extra, dict) else None)
        if not isinstance(sub, dict):
            continue
        types = sub.get("type")
        types = types if isinstance(types, list) else [types]
        if isinstance(value, list) and isinstance(sub.get("items"), dict):  # e.g. lr: [1e-4, 3e-4]
            item_types = sub["items"].get("type")
            item_types = item_types if isinstance(item_types, list) else [item_types]
            if "number" in item_types:
                instance[key] = [float(v) if isinstance(v, str) and _FLOAT.match(v.strip()) else v for v in value]
        elif "number" in types and isinstance(value, str) and _FLOAT.match(value.strip()):
            instance[key] = float(value)
        elif "integer" in types and isinstance(value, str) and re.fullmatch(r"[+-]?\d+", value.strip()):
            instance[key] = int(value)
        else:
            coerce_numbers(value, sub, root)


#: a hub id: owner/name (optionally a single name, as some hub models are)
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(?:/[\w.-]+)?$")


def _looks_local(path: str) -> bool:
    """A path no hub id can be: absolute, ./ or ../ or ~, a trailing slash, or more than one '/'."""
    return path.startswith(("/", "./", "../", "~")) or path.endswith("/") or path.count("/") > 1


def missing_local_models(cfg: dict, root: str | os.PathLike[str] = ".") -> list[str]:
    """Models whose path is a local folder (by its form) that does not exist under ``root``.

    Not part of :func:`validate`, which also checks specs inside jobs and configs read from
    elsewhere (a test, another work dir), where a relative path means another folder: the
    Snakefile calls it with the work dir before planning, and so does ``spurious check-config``.
    Organisms are skipped: their folder is built by the build_organism rule.
    """
    out = []
    for name, m in cfg["models"].items():
        path = os.path.expanduser(str(m["path"]))
        if m.get("organism") or not _looks_local(str(m["path"])):
            continue
        full = Path(path) if os.path.isabs(path) else Path(root) / path
        if not full.is_dir():
            out.append(f"models.{name}.path: {m['path']!r} is a local path, but no such folder exists "
                       f"(under {Path(root).resolve()}); a hub id is owner/name")
    return out


def _model_problems(cfg: dict) -> list[str]:
    """A model path that is not a local folder (here, or later: an organism, a work dir's path) must
    at least be a well-formed hub id, or the job would fail at download time."""
    problems = []
    for name, m in cfg["models"].items():
        path = str(m["path"])
        if m.get("organism") or Path(path).exists():
            continue
        if not _looks_local(path) and not _HUB_ID.match(path):
            problems.append(f"models.{name}.path: {path!r} is neither an existing local folder nor a hub id "
                            "(owner/name: letters, digits, '.', '_', '-')")
    return problems


def _check_references(cfg: dict) -> None:
    """Cross-key checks the schema cannot express."""
    from .scoring import rewards  # lazy: keeps `spurious --help` fast

    problems: list[str] = []
    datasets, variants = cfg["datasets"], cfg["variants"]
    if cfg["training_data"] not in datasets:
        problems.append(
            f"training_data: {cfg['training_data']!r} is not a dataset; allowed values: {', '.join(datasets)}"
        )
    for name, r in cfg["rewards"].items():
        try:
            rewards.parse_reward(r["spec"])
        except ValueError as exc:
            problems.append(f"rewards.{name}.spec: {exc}")
        for v in r["variants"]:
            if v not in variants:
                problems.append(
                    f"rewards.{name}.variants: {v!r} is not a variant; allowed values: {', '.join(variants)}"
                )
        if r["labels"] == "one_shot" and not any(d["kind"] == "one_shot" for d in datasets.values()):
            problems.append(f"rewards.{name}.labels: one_shot needs a dataset with kind: one_shot")
    for name, b in cfg["benchmarks"].items():
        if b["dataset"] not in datasets:
            problems.append(
                f"benchmarks.{name}.dataset: {b['dataset']!r} is not a dataset; allowed values: {', '.join(datasets)}"
            )
        bad_k = [k for k in b["pass_at"] if k > b["samples"]]
        if bad_k:
            problems.append(f"benchmarks.{name}.pass_at: {bad_k} exceed samples={b['samples']}")
    g = cfg["grpo"]
    rollout = g["prompts_per_rollout"] * g["group_size"]
    if rollout % g["mini_batch"]:
        problems.append(
            f"grpo.mini_batch: {g['mini_batch']} must divide the rollout batch "
            f"prompts_per_rollout*group_size = {rollout}"
        )
    if g["mini_batch"] % g["micro_batch"]:
        problems.append(f"grpo.micro_batch: {g['micro_batch']} must divide grpo.mini_batch = {g['mini_batch']}")
    for name, v in variants.items():
        if v.get("prompts_per_rollout") is None or rollout % g["mini_batch"] or g["mini_batch"] % g["micro_batch"]:
            continue
        try:
            variant_settings(g, v)
        except ValueError as exc:
            problems.append(f"variants.{name}.prompts_per_rollout: {v['prompts_per_rollout']} x grpo.group_size "
                            f"= {v['prompts_per_rollout'] * g['group_size']} samples: {exc}")
    problems += _audit_references(cfg)
    problems += _model_problems(cfg)
    if problems:
        raise ConfigError("invalid config:\n  - " + "\n  - ".join(problems))


def _audit_references(cfg: dict) -> list[str]:
    """The audit's keys name datasets, benchmarks and variants that must exist."""
    a = cfg["audit"]
    problems: list[str] = []

    def check(key: str, names: list | None, allowed: dict, what: str) -> None:
        for n in names or []:
            if n not in allowed:
                problems.append(f"audit.{key}: {n!r} is not a {what}; allowed values: {', '.join(allowed)}")

    check("contamination.datasets", a["contamination"]["datasets"], cfg["datasets"], "dataset")
    check("baselines.benchmarks", a["baselines"]["benchmarks"], cfg["benchmarks"], "benchmark")
    if a["baselines"]["shots_dataset"] is not None:
        check("baselines.shots_dataset", [a["baselines"]["shots_dataset"]], cfg["datasets"], "dataset")
    check("clean", a["clean"], cfg["benchmarks"], "benchmark")
    for name in a["clean"]:
        ds = cfg["datasets"].get(cfg["benchmarks"].get(name, {}).get("dataset"), {})
        if ds and (ds.get("kind") != "synthetic" or ds.get("split") != "test"):
            problems.append(
                f"audit.clean: benchmark {name!r} is not clean: its dataset must have kind: synthetic "
                f"and split: test (the contamination-free generator's held-out half)"
            )
    if a["verdict"]["benchmark"] is not None:
        check("verdict.benchmark", [a["verdict"]["benchmark"]], cfg["benchmarks"], "benchmark")
    check("clip_probe.variants", a["clip_probe"]["variants"], cfg["variants"], "variant")
    m = a["mechanism"]
    rollout = (a["clip_probe"]["prompts_per_rollout"] or cfg["grpo"]["prompts_per_rollout"]) * cfg["grpo"]["group_size"]
    mapped = m["enabled"] and [n for n in (m["models"] or a["clip_probe"]["models"] or cfg["models"])
                               if n in cfg["models"]]
    for u in m["updates"] if mapped else []:  # a map with no model left (a cut-down config) plans nothing
        if rollout % u:
            problems.append(f"audit.mechanism.updates: {u} must divide the probe's rollout of {rollout} samples "
                            "(audit.clip_probe.prompts_per_rollout or grpo.prompts_per_rollout x grpo.group_size)")
    for hi in m["epsilon_high"]:
        low = [e for e in m["epsilon"] if hi is not None and hi < e]
        if low:
            problems.append(f"audit.mechanism.epsilon_high: {hi} is below epsilon {low} (clip-higher raises the "
                            "upper bound: epsilon_high >= epsilon, or null for symmetric)")
    return problems


# ---------------------------------------------------------------------------
# the mechanism map (audit.mechanism)
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MechanismCell:
    """One cell of the mechanism map: the settings that control GRPO's clipping bias.

    ``epsilon_high`` None is symmetric clipping; ``updates`` is optimizer updates per
    rollout (mini-batch = rollout / updates); ``lr`` is the step's learning rate.
    """

    epsilon: float
    epsilon_high: float | None
    updates: int
    lr: float

    @property
    def id(self) -> str:
        """The cell's name in paths and tables, e.g. ``eps0.2-u4-lr0.0001`` (``-hi0.28`` for clip-higher)."""
        hi = "" if self.epsilon_high is None else f"-hi{self.epsilon_high:g}"
        return f"eps{self.epsilon:g}{hi}-u{self.updates}-lr{self.lr:g}"

    def grpo(self, grpo: dict, rollout: int) -> dict:
        """``grpo`` with this cell's clipping, mini-batch and learning rate (what the probe and checks train with)."""
        mini = rollout // self.updates
        return {**grpo, "epsilon": self.epsilon, "epsilon_high": self.epsilon_high, "lr": self.lr,
                "mini_batch": mini, "micro_batch": min(int(grpo.get("micro_batch") or mini), mini)}


#: the two arms of every map cell and checking run: the cell's clipping, and an epsilon that never binds
MECHANISM_ARMS: dict[str, dict] = {"clip": {"clip": True, "one_update": False},
                                   "no_clip": {"clip": False, "one_update": False}}


#: the reward name of the checking runs (their reward is the probe's Bernoulli reward, not a config entry)
CHECK_REWARD = "probe_random"


def check_reward(cfg: dict) -> dict:
    """The checking runs' reward: random(audit.clip_probe.reward_p) on the training data, as the map's draws."""
    p = cfg["audit"]["clip_probe"]["reward_p"]
    return {"spec": f"random({p:g})", "labels": "true_labels", "variants": list(MECHANISM_ARMS)}


def organism_style_measure(block: dict) -> str:
    """How an organism's style prior is read: ``first_token`` or ``code_frequency``.

    With ``style_tokens: first`` P(first token opens a code fence) is the prior exactly and
    without sampling noise. With ``spread`` the first token is a filler word, so that
    probability is about 0 and says nothing; the prior is then the sampled code frequency,
    as for a real model. The organism build writes it to the manifest; the clip probe's
    ``style: auto`` reads it (here, where both the organisms and the audit may import it).
    """
    return "code_frequency" if block.get("style_tokens", "first") == "spread" else "first_token"


def mechanism_models(cfg: dict) -> list[str]:
    """Models the map runs on (none when disabled; null = the clip probe's models, which the memory plan checks)."""
    m = cfg["audit"]["mechanism"]
    if not m["enabled"]:
        return []
    # names that are not configured models are skipped (as a reward's `models`), so a config cut
    # down to fewer models stays valid unedited
    return [n for n in (m["models"] or cfg["audit"]["clip_probe"]["models"] or cfg["models"]) if n in cfg["models"]]


def mechanism_lr(cfg: dict, lr: float | None) -> float:
    """A map lr of null: the probe's (audit.clip_probe.lr, else grpo.lr)."""
    return float(lr if lr is not None else (cfg["audit"]["clip_probe"]["lr"] or cfg["grpo"]["lr"]))


def mechanism_cells(cfg: dict) -> list[MechanismCell]:
    """Every cell of the map: epsilon x epsilon_high x updates x lr, in config order (duplicates dropped)."""
    m = cfg["audit"]["mechanism"]
    cells = [MechanismCell(float(e), None if h is None else float(h), int(u), mechanism_lr(cfg, lr))
             for e in m["epsilon"] for h in m["epsilon_high"] for u in m["updates"] for lr in m["lr"]]
    return list(dict.fromkeys(cells))


def mechanism_cell(cfg: dict, cell_id: str) -> MechanismCell:
    """The cell named ``cell_id`` (a wildcard value)."""
    for c in mechanism_cells(cfg):
        if c.id == cell_id:
            return c
    raise ValueError(f"audit.mechanism: no cell {cell_id!r}; cells: {', '.join(c.id for c in mechanism_cells(cfg))}")


def verdict_benchmark(cfg: dict) -> str:
    """The benchmark the verdict judges (configured, else the first one: the main benchmark)."""
    return cfg["audit"]["verdict"]["benchmark"] or next(iter(cfg["benchmarks"]))


def baseline_benchmarks(cfg: dict) -> list[str]:
    """Benchmarks the prompt-robust baselines are evaluated on."""
    return cfg["audit"]["baselines"]["benchmarks"] or [verdict_benchmark(cfg)]


def baseline_benchmark(cfg: dict, name: str) -> dict:
    """Benchmark ``name`` as the baselines evaluate it: ``audit.baselines.samples`` per problem (at most
    the benchmark's own), pass_at values above that dropped."""
    b = dict(cfg["benchmarks"][name])
    n = cfg["audit"]["baselines"].get("samples")
    if n is not None and n < b["samples"]:
        b["samples"] = int(n)
        b["pass_at"] = [k for k in b["pass_at"] if k <= n] or [1]
    return b


def contamination_datasets(cfg: dict) -> list[str]:
    """Datasets the contamination audit covers (default: every benchmark's dataset, in config order)."""
    named = cfg["audit"]["contamination"]["datasets"]
    return list(named) if named else list(dict.fromkeys(b["dataset"] for b in cfg["benchmarks"].values()))


def probe_models(cfg: dict) -> list[str]:
    """Models the clipping-bias probe runs on (none when it is disabled).

    Names that are not configured models are skipped (as a reward's or the map's
    `models`), so a config cut down to fewer models stays valid unedited; a list
    naming none of them probes nothing (it never falls back to every model).
    """
    cp = cfg["audit"]["clip_probe"]
    if not cp["enabled"]:
        return []
    return [n for n in (cfg["models"] if cp["models"] is None else cp["models"]) if n in cfg["models"]]


def probe_variants(cfg: dict) -> list[str]:
    """Variants the clipping-bias probe compares."""
    return list(cfg["audit"]["clip_probe"]["variants"] or cfg["variants"])


# ---------------------------------------------------------------------------
# study files as overlays (`extends:`)
# ---------------------------------------------------------------------------

def merge(base: dict, over: dict, replace: frozenset[str] = frozenset(), _prefix: str = "") -> dict:
    """``over`` laid on ``base`` (a new dict): mappings merge key by key, lists and scalars replace.

    Snakemake's own rule for several ``--configfile``s, so an overlay reads the same in both.
    ``replace``: dotted key paths whose mapping in ``over`` replaces the base's whole (an
    overlay's ``replace: [models]``: only its own models, none of the base's).
    """
    out = copy.deepcopy(base)
    for key, value in over.items():
        path = f"{_prefix}{key}"
        if isinstance(value, dict) and isinstance(out.get(key), dict) and path not in replace:
            out[key] = merge(out[key], value, replace, f"{path}.")
        else:
            out[key] = copy.deepcopy(value)
    return out


def _replace_paths(file: Path, cfg: dict) -> frozenset[str]:
    """An overlay's ``replace:`` list (dotted key paths it sets whole), checked."""
    paths = cfg.get(REPLACE, [])
    if not isinstance(paths, list) or not all(isinstance(p, str) and p for p in paths):
        raise ConfigError(f"{file}: replace: must be a list of dotted keys (e.g. [models]), got {paths!r}")
    for p in paths:
        node: Any = cfg
        for part in p.split("."):
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"{file}: replace: {p!r} is not a key this file sets")
            node = node[part]
    return frozenset(paths)


def _read_yaml_mapping(path: Path, extended_by: Path | None) -> dict:
    if not path.is_file():
        by = f" (the `extends:` of {extended_by})" if extended_by else ""
        raise ConfigError(f"{path}: no such config file{by}")
    with open(path) as fh:
        try:
            cfg = yaml.safe_load(fh)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if cfg is None:
        return {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"{path}: a config must be a mapping, got {type(cfg).__name__}")
    return cfg


def extends_chain(path: str | Path) -> list[Path]:
    """The study files ``path`` is made of, itself first, then what it extends, and so on."""
    chain: list[Path] = []
    current: Path | None = Path(path)
    while current is not None:
        resolved = current.resolve()
        if resolved in (c.resolve() for c in chain):
            loop = " -> ".join(str(c) for c in [*chain, current])
            raise ConfigError(f"{chain[0]}: `extends:` loops: {loop}")
        cfg = _read_yaml_mapping(current, chain[-1] if chain else None)
        chain.append(current)
        parent = cfg.get(EXTENDS)
        if parent is None:
            current = None
        elif not isinstance(parent, str) or not parent:
            raise ConfigError(f"{current}: extends: must be a file path (relative to {current}), got {parent!r}")
        else:
            current = Path(os.path.normpath(current.parent / parent))
    return chain


def read(path: str | Path) -> dict:
    """A config file with its ``extends:`` chain resolved (unvalidated, ``extends`` removed).

    Why overlays: a study that differs from another in three values says only those three
    (config/organism-full.yaml extends config.yaml); a file without ``extends`` inherits
    nothing, which keeps config/paper.yaml free of the toy models.
    """
    cfg: dict = {}
    for file in reversed(extends_chain(path)):
        own = _read_yaml_mapping(file, None)
        replace = _replace_paths(file, own)
        own = {k: v for k, v in own.items() if k not in (EXTENDS, REPLACE)}
        cfg = merge(cfg, own, replace)
    return cfg


def resolve_files(files: list[str | Path], overrides: dict | None = None) -> dict:
    """Several config files read in order (each with its chain), then ``overrides`` on top.

    What the Snakefile does with Snakemake's ``--configfile`` list and ``--config`` values.
    """
    cfg: dict = {}
    for f in files:
        cfg = merge(cfg, read(f))
    return merge(cfg, overrides or {})


def load(path: str | Path) -> dict:
    """Read a YAML config file (resolving ``extends:``) and validate it."""
    cfg = read(path)
    try:
        return validate(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def config_hash(cfg: dict) -> str:
    """Short stable hash of a (validated) config, recorded in every result for provenance."""
    blob = json.dumps(cfg, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


# ---------------------------------------------------------------------------
# the grid
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    """One training job: a (model, reward, variant, seed) cell of the grid."""

    model: str
    reward: str
    variant: str
    seed: int

    @property
    def path(self) -> str:
        """The run's folder below each phase (``paths.RUN``)."""
        return paths.RUN.format(**self.wildcards)

    @property
    def wildcards(self) -> dict[str, object]:
        return {"model": self.model, "reward": self.reward, "variant": self.variant, "seed": self.seed}


def trains_on(reward_cfg: dict, model: str) -> bool:
    """Whether a reward trains on ``model`` (its ``models`` list; absent = every model).

    Names in the list that are not configured models are skipped rather than refused, so a
    config cut down to fewer models (a test, one model's study) stays valid unedited.
    """
    models = reward_cfg.get("models")
    return models is None or model in models


def runs(cfg: dict) -> Iterator[Run]:
    """Every training run of the grid, in config order."""
    for model in cfg["models"]:
        for reward, r in cfg["rewards"].items():
            if not trains_on(r, model):
                continue
            for variant in r["variants"]:
                for seed in cfg["seeds"]:
                    yield Run(model, reward, variant, seed)


def checkpoint_steps(cfg: dict) -> list[int]:
    """Rollout steps at which a checkpoint is saved (and evaluated); the last step is always included."""
    g = cfg["grpo"]
    steps = list(range(g["save_every"], g["steps"] + 1, g["save_every"]))
    if not steps or steps[-1] != g["steps"]:
        steps.append(g["steps"])
    return steps


@dataclass(frozen=True)
class VariantSettings:
    """How a variant trains: the one place the variant arithmetic lives.

    One rollout step = ``rollout`` responses, split into mini-batches of ``mini_batch``
    (``updates`` optimizer updates, each response used once; updates 2..k are off-policy,
    so the ratio leaves 1 and clipping can act). ``one_update`` takes the whole rollout as
    one mini-batch (ratio exactly 1); ``no_clip`` keeps the updates with an epsilon that
    never binds. Both backends and the clip probe train from this.
    """

    rollout: int
    mini_batch: int
    micro_batch: int
    updates: int
    epsilon: float
    epsilon_high: float
    clip: bool


def variant_settings(grpo: dict, variant: dict, prompts_per_rollout: int | None = None) -> VariantSettings:
    """The variant's batch shape and clipping (``prompts_per_rollout`` overrides ``grpo``'s)."""
    prompts = prompts_per_rollout or variant.get("prompts_per_rollout") or grpo["prompts_per_rollout"]
    rollout = int(prompts) * int(grpo["group_size"])
    mini = rollout if variant["one_update"] else min(int(grpo["mini_batch"]), rollout)
    micro = min(int(grpo.get("micro_batch") or mini), mini)  # a hand-written spec may leave it out
    if rollout % mini or mini % micro:
        raise ValueError(
            f"grpo: micro_batch {micro} must divide mini_batch {mini}, which must divide the rollout {rollout}"
        )
    eps = float(grpo["epsilon"]) if variant["clip"] else NO_CLIP_EPSILON
    eps_high = grpo.get("epsilon_high")
    eps_high = float(eps_high) if (variant["clip"] and eps_high is not None) else eps
    return VariantSettings(rollout=rollout, mini_batch=mini, micro_batch=micro, updates=rollout // mini,
                           epsilon=eps, epsilon_high=eps_high, clip=bool(variant["clip"]))


def updates_per_rollout(cfg: dict, variant: str) -> int:
    """Optimizer updates per rollout step of ``variant``."""
    return variant_settings(cfg["grpo"], cfg["variants"][variant]).updates


def main_variant(reward_cfg: dict) -> str:
    """The variant a reward is reported under: ``clip`` (the paper's default) when it has one."""
    variants = reward_cfg["variants"]
    return "clip" if "clip" in variants else variants[0]


def labels_needed(cfg: dict) -> set[str]:
    """Which label sets (majority_vote / incorrect) some reward trains on."""
    return {r["labels"] for r in cfg["rewards"].values()} & {"majority_vote", "incorrect"}


def training_data_path(cfg: dict, model: str, reward: str) -> str:
    """The file a (model, reward) trains on: a label set, the one-shot example or the training set."""
    labels = cfg["rewards"][reward]["labels"]
    if labels in ("majority_vote", "incorrect"):
        return paths.results(paths.LABELS, model=model, labels=labels)
    if labels == "one_shot":
        name = next(n for n, d in cfg["datasets"].items() if d["kind"] == "one_shot")
        return paths.results(paths.DATASET, dataset=name)
    return paths.results(paths.DATASET, dataset=cfg["training_data"])


def empty_label_rule(cfg: dict, reward: str) -> str:
    """How ground truth scores an empty training label for ``reward`` (``RewardContext.empty_label``).

    ``labelling.empty_majority: authors`` applies to the majority-vote and incorrect label
    sets, whose empty labels it keeps; every other case scores 0 (``zero``; ``drop`` leaves
    no empty label to score). True labels keep ``zero``: the few training problems without
    an answer score 0 (the authors' grader would score 1 an answerless response there too).
    """
    labels = cfg["rewards"][reward]["labels"]
    if labels in ("majority_vote", "incorrect") and cfg["labelling"].get("empty_majority") == "authors":
        return "authors"
    return "zero"


def is_local_model(cfg: dict, model: str) -> bool:
    """True when the model's weights come from a local folder (a built organism or a user's path)."""
    m = cfg["models"][model]
    return bool(m.get("organism")) or Path(m["path"]).exists()


def run_spec(cfg: dict, run: Run) -> dict:
    """Everything one training job needs, resolved (what the train rule passes to ``spurious train``)."""
    model = cfg["models"][run.model]
    reward = cfg["rewards"][run.reward]
    variant = cfg["variants"][run.variant]
    grpo = dict(cfg["grpo"])
    reward_spec = {"name": run.reward, "spec": reward["spec"], "labels": reward["labels"]}
    rule = empty_label_rule(cfg, run.reward)
    if rule != "zero":  # absent = zero, so specs (and trained runs) from before the key stay valid
        reward_spec["empty_label"] = rule
    return {
        "run": run.path,
        "backend": cfg["backend"],
        "model": {"name": run.model, **{k: model[k] for k in ("path", "template", "family")}},
        "reward": reward_spec,
        "variant": {"name": run.variant, **variant},
        "seed": run.seed,
        "grpo": grpo,
        "updates_per_rollout": updates_per_rollout(cfg, run.variant),
        "checkpoint_steps": checkpoint_steps(cfg),
    }


def regex_alternatives(names: Any) -> str:
    """A wildcard constraint matching exactly the given names."""
    return "|".join(re.escape(str(n)) for n in sorted(names, key=len, reverse=True))
