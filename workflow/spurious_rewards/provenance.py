"""Where an output came from: code version, package versions, interpreter, seed, config hash.

Added to every summary the pipeline writes (evaluation ``summary.json``, a run's
``checkpoints/index.json``, the majority-vote labelling stats) so a number can be
traced to the code and the randomness that produced it. Deliberately host-free:
no hostname, user name, path or time, so equal runs give equal provenance.

Result files that cannot hold it themselves (JSONL data, label sets, samples,
metrics) carry it in a *sidecar*: ``<file>.provenance.json`` beside a file,
``provenance.json`` inside a folder (:func:`write_sidecar`, or
``io.atomic_output(path, sidecar=record(spec, seed))`` /
``io.write_jsonl(..., sidecar=...)``, which publish it before the file itself).
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from . import io

__all__ = ["PACKAGES", "git_commit", "git_dirty", "hardware", "package_versions", "provenance", "read_sidecar", "record", "spec_hash",
           "write_sidecar"]

#: Distributions whose versions change numbers (None when not installed): the engines
#: (generation drifts with vLLM and the GPU), the trainers, the grader and the analysis stack.
PACKAGES = ("torch", "transformers", "tokenizers", "trl", "accelerate", "vllm", "openrlhf", "deepspeed",
            "math-verify", "datasets", "numpy", "pandas", "matplotlib", "rouge-score", "snakemake")

_ROOT = Path(__file__).resolve().parents[2]


def git_commit(cwd: str | Path | None = None) -> str | None:
    """``git rev-parse HEAD`` of the source tree, or None (no git, not a checkout, timeout)."""
    try:
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=str(cwd or _ROOT), capture_output=True, text=True, timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    out = res.stdout.strip()
    return out if res.returncode == 0 and len(out) >= 7 else None


def git_dirty(cwd: str | Path | None = None) -> bool | None:
    """Whether tracked files other than the pipeline's own outputs differ from HEAD (None when unknown).

    ``results/`` and ``dvc.lock`` are left out: the committed reference results (summary.md, its
    tables and figures) and DVC's record of them are rewritten by every run (``dvc repro`` updates
    the lock between its stages), and a result is "from uncommitted changes" only when the code or
    configs that made it were.
    """
    try:
        res = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":(exclude)results",
                              ":(exclude)dvc.lock"],
                             cwd=str(cwd or _ROOT),
                             capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return bool(res.stdout.strip()) if res.returncode == 0 else None


def hardware() -> dict[str, str | None]:
    """The accelerator the numbers came from: GPU name and CUDA version (None on CPU).

    torch is only consulted when the job already imported it (a probe must not pay the import).
    """
    import sys

    torch = sys.modules.get("torch")
    out: dict[str, str | None] = {"gpu": None, "cuda": None}
    if torch is None:
        return out
    try:
        if torch.cuda.is_available():
            out["gpu"] = torch.cuda.get_device_name(0)
            out["cuda"] = torch.version.cuda
    except Exception:  # pragma: no cover - a broken driver must not fail a result
        pass
    return out


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed versions of ``packages`` (None where absent); a copy of one lookup per process.

    Cached because a process does not change its installed packages, and the aggregation
    writes ~25 sidecars: reading the distributions' metadata each time was ~1 s of it.
    """
    return dict(_package_versions(tuple(packages)))


@functools.lru_cache(maxsize=8)
def _package_versions(packages: tuple[str, ...]) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance(config_hash: str | None, seed: int | None) -> dict:
    """A JSON-ready record: ``git_commit``, ``git_dirty``, ``packages``, ``python``, ``hardware``,
    ``config_hash``, ``seed``. The one provenance of every result the pipeline writes."""
    return {
        "git_commit": git_commit(),
        "git_dirty": git_dirty(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "hardware": hardware(),
        "config_hash": config_hash,
        "seed": seed,
    }


def spec_hash(spec: object) -> str:
    """Short sha256 of a job's resolved ``--spec`` (canonical JSON), standing in for the config hash."""
    import hashlib
    import json

    text = json.dumps(spec, sort_keys=True, default=str, ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def record(spec_or_hash: object, seed: int | None) -> dict:
    """:func:`provenance` for a job: ``spec_or_hash`` is its resolved spec (hashed with
    :func:`spec_hash`), an already computed hash (a ``str``), or None."""
    if spec_or_hash is None or isinstance(spec_or_hash, str):
        return provenance(spec_or_hash, seed)
    return provenance(spec_hash(spec_or_hash), seed)


def write_sidecar(path: str | os.PathLike[str], spec_or_hash: object, seed: int | None, *,
                  sha256: str | None = None) -> Path:
    """Write the provenance of the output at ``path``; returns where it went.

    * ``path`` an existing **folder** (e.g. the temporary yielded by ``io.atomic_output``
      for a folder output): ``<path>/provenance.json``, published with the folder by its
      atomic rename. Call it inside the ``with`` block, after creating the folder.
    * otherwise (a **file** output; pass the *final* path, not a temporary):
      ``<path>.provenance.json``, written atomically. Call it before the file is renamed
      into place; ``sha256`` (optional) records which content it describes.

    ``spec_or_hash``/``seed``: as for :func:`record`.
    """
    rec = record(spec_or_hash, seed)
    p = Path(path)
    if p.is_dir():
        out = p / io.DIR_SIDECAR
        io.write_json(rec, out)
        return out
    if sha256 is not None:
        rec["sha256"] = sha256
    out = io.sidecar_path(p)
    io.write_json(rec, out)
    return out


def read_sidecar(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The provenance record of a file or folder output, or None when it has none."""
    p = Path(path)
    side = p / io.DIR_SIDECAR if p.is_dir() else io.sidecar_path(p)
    return io.read_json(side) if side.exists() else None
