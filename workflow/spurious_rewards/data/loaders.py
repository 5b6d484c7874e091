"""One normalized record format for every dataset, and the code that produces it.

Every training and evaluation set becomes JSONL with exactly four string fields::

    {"id": ..., "prompt": ..., "answer": ..., "source": ...}

``prompt`` is the raw problem text (no instruction suffix, no chat template: templates
are per model and applied later); ``answer`` is the label exactly as the source gives it
(``"142.0"`` for AMC, ``"033"`` for AIME 2024: the paper keeps these forms and its grader
copes); ``source`` is a benchmark tag. This is the format of the authors' own
``code/data`` files, so downstream steps never care where a set came from.

Two optional string fields ride along: ``true_answer`` (label sets: the real answer
behind a majority-vote or incorrect label) and ``solution`` (a worked solution, when the
source has one: a hub column named by ``fields.solution``, such as DeepScaleR's
``solution``, or the generator's own with ``solutions: true``). Only the few-shot
baseline reads ``solution``; a row whose source cell is null or empty has none.

Hub sets, local directories in a hub repo's layout, and single local files all go
through :func:`datasets.load_dataset`, so the offline fixtures exercise the very code
path that would download the real data (docs/datasets.md §7).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..io import DataError, iter_jsonl_numbered, write_jsonl
from . import synthetic

__all__ = [
    "ONE_SHOT_ANSWER",
    "ONE_SHOT_PROMPT",
    "RECORD_FIELDS",
    "DataError",
    "load_records",
    "prepare",
    "prepare_to_file",
]

log = logging.getLogger(__name__)

#: The fields of a normalized record, in the order they are written.
RECORD_FIELDS: tuple[str, ...] = ("id", "prompt", "answer", "source")
#: label sets (majority vote, incorrect) also carry the true answer, for accuracy tracking;
#: sets whose source has worked solutions carry them (the few-shot baseline shows them)
OPTIONAL_FIELDS: tuple[str, ...] = ("true_answer", "solution")

#: π1 of Wang et al. (One-Shot RLVR), verbatim, with its own instruction suffix (docs/paper-setup.md §3.3).
ONE_SHOT_PROMPT = (
    "The pressure \\( P \\) exerted by wind on a sail varies jointly as the area \\( A \\) of the sail "
    "and the cube of the wind's velocity \\( V \\). When the velocity is \\( 8 \\) miles per hour, the "
    "pressure on a sail of \\( 2 \\) square feet is \\( 4 \\) pounds. Find the wind velocity when the "
    "pressure on \\( 4 \\) square feet of sail is \\( 32 \\) pounds. Let's think step by step and output "
    "the final answer within \\boxed{}."
)
#: π1's label. The exact value is ∛2048 ≈ 12.70; the paper trains on the approximate 12.8.
ONE_SHOT_ANSWER = "12.8"

_ANSWER_FORMATS = ("as_is", "int_if_integral")
_FILE_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


@dataclass(frozen=True)
class _Row:
    """A record plus where it came from, so every error can point at the source row."""

    record: dict[str, Any]
    file: str
    line: int | str


# --------------------------------------------------------------------------- public API


def prepare(spec: Mapping[str, Any]) -> list[dict[str, str]]:
    """Build the normalized records of one ``datasets:`` config entry (its key under ``name``).

    Kinds: ``hub`` (anything :func:`datasets.load_dataset` reads: a hub id, a local
    directory in a hub repo's layout, or a local .json/.jsonl/.parquet/.csv file),
    ``synthetic`` (:func:`spurious_rewards.data.synthetic.generate`) and ``one_shot`` (π1).
    Raises :class:`DataError` for a bad spec, a missing column, a null or empty
    prompt or id, an empty answer (unless ``allow_empty_answer``), duplicate ids or
    an empty result. Repeated prompts are allowed (DeepScaleR has them).
    """
    name, kind = _check_spec(spec)
    limit = spec.get("limit")
    source = str(spec.get("source") or name)
    fields: dict[str, str] = {}
    if kind == "hub":
        rows, fields = _hub_rows(spec, name, source, limit)
    elif kind == "synthetic":
        rows = _synthetic_rows(spec, name, source)
    else:
        rows = _one_shot_rows(spec, source)
    if limit is not None:
        rows = rows[:limit]
    if not rows:
        raise DataError(_spec_label(name), "produced no records")
    _check_rows(rows, allow_empty_answer=spec.get("allow_empty_answer", False), columns=fields)
    return [row.record for row in rows]


def prepare_to_file(spec: Mapping[str, Any], out_path: str | os.PathLike[str], *,
                    with_provenance: bool = False) -> int:
    """:func:`prepare` and write the records as JSONL, atomically. Returns the record count.

    ``with_provenance`` (what ``spurious prepare-data`` uses) also publishes
    ``<out_path>.provenance.json`` (config hash = hash of ``spec``, seed = ``spec["seed"]``
    or None), before the data file is renamed into place.
    """
    sidecar = None
    if with_provenance:
        from .. import provenance

        sidecar = provenance.record(dict(spec), spec.get("seed"))
    return write_jsonl(prepare(spec), out_path, sidecar=sidecar)


def load_records(path: str | os.PathLike[str], *, allow_empty_answer: bool = True) -> list[dict[str, str]]:
    """Read and validate a normalized JSONL file (gzip-aware).

    Every line must be an object with exactly the four string fields; ids must be
    unique; prompts and ids non-empty. Empty answers are accepted by default because
    :func:`prepare` already enforced each dataset's own policy (majority-vote sets may
    carry ``""`` labels); pass ``allow_empty_answer=False`` to re-check. Errors name the
    file, the line and the field.
    """
    p = Path(path)
    rows: list[_Row] = []
    extras: list[dict[str, str]] = []
    for lineno, obj in iter_jsonl_numbered(p):
        if not isinstance(obj, dict):
            raise DataError(p, f"expected a JSON object, got {type(obj).__name__}", line=lineno)
        for field in RECORD_FIELDS:
            if field not in obj:
                raise DataError(
                    p, f"missing (a record needs {', '.join(RECORD_FIELDS)})", line=lineno, field=field
                )
        extra = sorted(set(obj) - set(RECORD_FIELDS) - set(OPTIONAL_FIELDS))
        if extra:
            raise DataError(
                p,
                f"unexpected (a record has {', '.join(RECORD_FIELDS)} and optionally {', '.join(OPTIONAL_FIELDS)})",
                line=lineno,
                field=extra[0],
            )
        for field in OPTIONAL_FIELDS:
            if field in obj and not isinstance(obj[field], str):
                raise DataError(p, f"must be a string, got {type(obj[field]).__name__}", line=lineno, field=field)
        row = _Row({f: obj[f] for f in RECORD_FIELDS}, str(p), lineno)
        rows.append(row)
        extras.append({f: obj[f] for f in OPTIONAL_FIELDS if f in obj})
    if not rows:
        raise DataError(p, "no records (empty file)")
    _check_rows(rows, allow_empty_answer=allow_empty_answer, columns={}, where="line")
    return [{**row.record, **extra} for row, extra in zip(rows, extras, strict=True)]


# --------------------------------------------------------------------------- spec checks


def _spec_label(name: str) -> str:
    return f"datasets.{name}"


def _check_spec(spec: Mapping[str, Any]) -> tuple[str, str]:
    """Validate a job's dataset spec against the schema's ``dataset`` definition, up front.

    The schema is the single source of the dataset keys (which kind reads which key, what
    is required): a typo such as ``limt``, or a key of another kind, fails here with the
    config validation's own message, never silently ignored.
    """
    from .. import config

    name = spec.get("name")
    if not isinstance(name, str) or not name:
        raise DataError("datasets.<?>", "every dataset spec needs a non-empty string 'name'", field="name")
    label = _spec_label(name)
    body = {k: v for k, v in spec.items() if k != "name"}
    problems = config.schema_problems(body, "dataset")
    if problems:
        key = problems[0][0]
        text = "; ".join(m.removeprefix(f"{key}: ") if k == key else m for k, m in problems)
        raise DataError(label, text, field=key or None)
    if spec.get("description"):
        log.info("%s: %s", label, spec["description"])
    return name, str(spec["kind"])


def _positive_int(spec: Mapping[str, Any], key: str, default: int, label: str) -> int:
    value = spec.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise DataError(label, f"must be a positive integer, got {value!r}", field=key)
    return value


# --------------------------------------------------------------------------- kind: hub


def _hub_rows(
    spec: Mapping[str, Any], name: str, source: str, limit: int | None
) -> tuple[list[_Row], dict[str, str]]:
    label = _spec_label(name)
    fields = _field_map(spec.get("fields"), label)
    answer_format = spec.get("answer_format") or "as_is"
    if answer_format not in _ANSWER_FORMATS:
        raise DataError(label, f"must be one of {', '.join(_ANSWER_FORMATS)}", field="answer_format")
    configs = spec.get("configs")
    if isinstance(configs, str):
        configs = [configs]
    if configs is not None and (not isinstance(configs, list) or not configs):
        raise DataError(label, "must be null or a non-empty list of config names", field="configs")
    path, split = str(spec["path"]), str(spec["split"])

    rows: list[_Row] = []
    for config in configs or [None]:
        ds = _load_split(spec, config)
        where = path if config is None else f"{path}[{config}]"
        for field, column in fields.items():
            if column not in ds.column_names:
                raise DataError(
                    where,
                    f"column '{column}' (for '{field}') not found in split '{split}'; "
                    f"available columns: {', '.join(ds.column_names)}",
                    field=column,
                )
        if len(ds) == 0:
            raise DataError(where, f"split '{split}' has no rows")
        prefix = config or name
        # only the mapped columns: never decode (or trip over) anything else
        for i, row in enumerate(ds.select_columns(sorted(set(fields.values())))):
            rec = {
                "id": f"{prefix}-{i}" if "id" not in fields else _as_text(row[fields["id"]]),
                "prompt": row[fields["prompt"]],
                "answer": _format_answer(row[fields["answer"]], answer_format),
                "source": source,
            }
            if "solution" in fields:
                solution = _as_text(row[fields["solution"]])
                if solution and solution.strip():  # DeepScaleR: "" where the source has no solution
                    rec["solution"] = solution
            rows.append(_Row(rec, where, f"row {i}"))
            if limit is not None and len(rows) >= limit:
                break
        if limit is not None and len(rows) >= limit:
            break
    if "solution" in fields:
        log.info("%s: %d of %d rows have a worked solution (column '%s')", label,
                 sum("solution" in r.record for r in rows), len(rows), fields["solution"])
    return rows, fields


def _field_map(fields: Any, label: str) -> dict[str, str]:
    """Validate ``fields``: our field → the source's column; ``id`` and ``solution`` may be null (none)."""
    if not isinstance(fields, Mapping):
        raise DataError(label, "must map prompt/answer[/id/solution] to the source's column names", field="fields")
    out: dict[str, str] = {}
    for key, column in fields.items():
        if key not in ("prompt", "answer", "id", "solution"):
            raise DataError(label, f"unknown target field '{key}' (prompt, answer, id, solution)", field="fields")
        if column is None and key in ("id", "solution"):
            continue
        if not isinstance(column, str) or not column:
            raise DataError(label, f"'{key}' must name a column, got {column!r}", field="fields")
        out[key] = column
    for key in ("prompt", "answer"):
        if key not in out:
            raise DataError(label, f"'{key}' must name a column", field="fields")
    return out


def _load_split(spec: Mapping[str, Any], config: str | None) -> Any:
    """``load_dataset`` one split: a local file by its format builder, anything else by path/hub id.

    Failures become :class:`DataError` naming the path; a network failure
    (``ConnectionError``) is left as it is, since it says nothing about the data.
    """
    import datasets  # heavy import, only needed here

    path, split = str(spec["path"]), str(spec["split"])
    where = path if config is None else f"{path}[{config}]"
    p = Path(path)
    try:
        if p.is_file():
            builder = next(
                (b for s, b in _FILE_BUILDERS.items() if p.name.removesuffix(".gz").endswith(s)), None
            )
            if builder is None:
                raise DataError(where, f"unsupported file type (one of {', '.join(_FILE_BUILDERS)})")
            if config is not None or spec.get("data_dir") is not None:
                raise DataError(
                    where, "'configs' and 'data_dir' apply to a directory or hub id, not to one file"
                )
            if p.stat().st_size == 0:
                raise DataError(where, "file is empty")
            # the file is named as the requested split, so `split` means the same for files and repos
            return datasets.load_dataset(builder, data_files={split: str(p)}, split=split)
        if not p.exists() and _looks_local(path):
            raise DataError(where, "no such file or directory (and not a hub id of the form owner/name)")
        return datasets.load_dataset(
            path, name=config, split=split, data_dir=spec.get("data_dir"), revision=spec.get("revision")
        )
    except (DataError, ConnectionError):
        raise
    except StopIteration as exc:  # what the json builder raises on an empty data file
        raise DataError(where, f"no data in split '{split}' (an empty data file?)") from exc
    except Exception as exc:
        if isinstance(exc, ValueError) and "corresponds to no data" in str(exc):  # datasets' word for 0 rows
            raise DataError(where, f"split '{split}' has no rows") from exc
        raise DataError(where, f"load_dataset failed: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    """The error and its root cause: ``DatasetGenerationError`` alone says nothing about what went wrong."""
    text = f"{type(exc).__name__}: {exc}"
    root = exc
    while root.__cause__ is not None or (root.__context__ is not None and not root.__suppress_context__):
        root = root.__cause__ or root.__context__  # type: ignore[assignment]
    return text if root is exc else f"{text} (caused by {type(root).__name__}: {root})"


def _looks_local(path: str) -> bool:
    """A hub id is ``owner/name``; anything else that does not exist is a missing local path."""
    return (
        os.path.isabs(path)
        or path.startswith(".")
        or path.count("/") != 1
        or Path(path).suffix in _FILE_BUILDERS
    )


def _as_text(value: Any) -> str | None:
    """Stringify a scalar cell; None and NaN (missing values) stay None so the checks can flag them."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, (str, int, float)):
        return str(value)
    return repr(value)  # a list or dict where a scalar belongs: kept visible, never silently fixed


def _format_answer(value: Any, answer_format: str) -> str | None:
    """``as_is`` keeps the source form (AMC ``142.0``, as the paper does); ``int_if_integral`` gives ``142``."""
    if answer_format == "int_if_integral" and isinstance(value, float) and value.is_integer():
        return str(int(value))
    return _as_text(value)


# --------------------------------------------------------------------------- kinds: synthetic, one_shot


def _synthetic_rows(spec: Mapping[str, Any], name: str, source: str) -> list[_Row]:
    label = _spec_label(name)
    n = _positive_int(spec, "n", 0, label)
    level = _positive_int(spec, "level", 1, label)
    try:
        problems = synthetic.generate(
            n,
            int(spec["seed"]),
            level=level,
            split=str(spec.get("split", "train")),
            id_prefix=str(spec.get("id_prefix") or name),
        )
    except ValueError as exc:
        raise DataError(label, str(exc)) from exc
    solutions = spec.get("solutions", False)
    if not isinstance(solutions, bool):
        raise DataError(label, f"must be true or false, got {solutions!r}", field="solutions")
    return [_Row(p.record(source, solution=solutions), label, f"row {i}") for i, p in enumerate(problems)]


def _one_shot_rows(spec: Mapping[str, Any], source: str) -> list[_Row]:
    label = "one_shot:pi1"
    copies = _positive_int(spec, "copies", 1, label)
    ids = ["pi1"] if copies == 1 else [f"pi1-{k}" for k in range(copies)]
    return [
        _Row(
            {"id": i, "prompt": ONE_SHOT_PROMPT, "answer": ONE_SHOT_ANSWER, "source": source},
            label,
            f"row {k}",
        )
        for k, i in enumerate(ids)
    ]


# --------------------------------------------------------------------------- shared checks


def _check_rows(
    rows: list[_Row], *, allow_empty_answer: bool, columns: Mapping[str, str], where: str = "row"
) -> None:
    """Types, non-empty prompt/id/answer and unique ids; errors name the source column where there is one."""
    first_seen: dict[str, _Row] = {}
    for row in rows:
        rec = row.record
        for field in RECORD_FIELDS:
            value = rec[field]
            shown = columns.get(field, field)
            if value is None:
                raise DataError(row.file, "missing value (null)", line=row.line, field=shown)
            if not isinstance(value, str):
                raise DataError(
                    row.file, f"expected a string, got {type(value).__name__}", line=row.line, field=shown
                )
            if not value.strip() and (field != "answer" or not allow_empty_answer):
                hint = (
                    ""
                    if field != "answer"
                    else " (set allow_empty_answer: true if the set may have unlabeled rows)"
                )
                raise DataError(row.file, f"empty{hint}", line=row.line, field=shown)
        prev = first_seen.setdefault(rec["id"], row)
        if prev is not row:
            at = prev.line if prev.file == row.file else f"{prev.file}:{prev.line}"
            raise DataError(
                row.file,
                f"duplicate id '{rec['id']}' (first at {where + ' ' if isinstance(at, int) else ''}{at})",
                line=row.line,
                field=columns.get("id", "id"),
            )
