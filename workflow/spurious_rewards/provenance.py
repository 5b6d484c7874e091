"""Where an output came from: code version, package versions, interpreter, seed, config hash.

Added to every summary the pipeline writes (evaluation ``summary.json``, a run's
``checkpoints/index.json``, the majority-vote labelling stats) so a number can be
traced to the code and the randomness that produced it. Deliberately host-free:
no hostname, user name, path or time, so equal runs give equal provenance.
"""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

__all__ = ["PACKAGES", "git_commit", "package_versions", "provenance"]

#: Distributions whose versions change numbers (None when not installed).
PACKAGES = ("torch", "transformers", "trl", "math-verify", "datasets", "snakemake")

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


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def provenance(config_hash: str | None, seed: int | None) -> dict:
    """A JSON-ready record: ``git_commit``, ``packages``, ``python``, ``config_hash``, ``seed``."""
    return {
        "git_commit": git_commit(),
        "packages": package_versions(),
        "python": platform.python_version(),
        "config_hash": config_hash,
        "seed": seed,
    }


def spec_hash(spec: object) -> str:
    """Short sha256 of a job's resolved ``--spec`` (canonical JSON), standing in for the config hash."""
    import hashlib
    import json

    text = json.dumps(spec, sort_keys=True, default=str, ensure_ascii=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
