"""``spurious fetch``: download every hub model and dataset of a config once, before any job.

Why: compute nodes of many clusters have no internet. Run this on a login node (with
``HF_TOKEN`` set, or after ``hf auth login``, for gated models such as Llama);
the files land in the Hugging Face cache (``HF_HOME``, which must be on a filesystem the
nodes share), and the jobs then run with ``HF_HUB_OFFLINE=1``. Local folders, the
organisms and generated datasets need nothing. The downloads are the real
``huggingface_hub.snapshot_download`` and ``datasets.load_dataset`` calls the jobs make,
so what is cached is exactly what they read (a dataset's ``revision`` pin included).
"""

from __future__ import annotations

import argparse
import logging
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

__all__ = ["Download", "add_parser", "downloads", "fetch"]


@dataclass(frozen=True)
class Download:
    """One thing to fetch: a model snapshot or one (config, split) of a hub dataset."""

    kind: str  # "model" | "dataset"
    name: str  # the config's key
    repo: str
    config: str | None = None
    split: str | None = None
    revision: str | None = None
    data_dir: str | None = None

    def describe(self) -> str:
        extra = "".join(f" {k}={v}" for k, v in (("config", self.config), ("split", self.split),
                                                  ("revision", self.revision), ("data_dir", self.data_dir)) if v)
        return f"{self.kind} {self.name}: {self.repo}{extra}"


def downloads(cfg: dict) -> list[Download]:
    """What a (validated) config reads from the hub, in config order (local paths and organisms excluded)."""
    out = []
    for name, m in cfg["models"].items():
        if m.get("organism") or Path(m["path"]).exists():
            continue
        out.append(Download("model", name, m["path"]))
    for name, d in cfg["datasets"].items():
        if d["kind"] != "hub" or Path(d["path"]).exists():
            continue
        configs = d.get("configs")
        configs = [configs] if isinstance(configs, str) else (configs or [None])
        out += [Download("dataset", name, d["path"], config=c, split=d["split"], revision=d.get("revision"),
                         data_dir=d.get("data_dir")) for c in configs]
    return out


def fetch(items: list[Download]) -> list[tuple[Download, str | None]]:
    """Download each item; returns ``(item, error or None)`` so one failure does not hide the others."""
    results: list[tuple[Download, str | None]] = []
    for item in items:
        try:
            if item.kind == "model":
                from huggingface_hub import snapshot_download

                # Meta's repos also hold an original/ checkpoint in another format: not what the jobs read
                path = snapshot_download(item.repo, revision=item.revision, ignore_patterns=["original/*"])
                log.info("%s -> %s", item.describe(), path)
            else:
                import datasets

                ds = datasets.load_dataset(item.repo, name=item.config, split=item.split,
                                           revision=item.revision, data_dir=item.data_dir)
                log.info("%s -> %d rows", item.describe(), len(ds))
            results.append((item, None))
        except Exception as exc:  # report every failure, then fail the command
            results.append((item, f"{type(exc).__name__}: {exc}"))
    return results


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``spurious fetch`` on the CLI's subparsers."""
    s = subparsers.add_parser("fetch", help="download every hub model and dataset of a config (login node)")
    s.add_argument("--configfile", type=Path, required=True)
    s.add_argument("--dry-run", action="store_true", help="list what would be downloaded, download nothing")
    s.set_defaults(func=cmd_fetch)


def cmd_fetch(args: argparse.Namespace) -> int:
    from . import config

    items = downloads(config.load(args.configfile))
    for item in items:
        print(item.describe())
    print(f"{len(items)} downloads ({sum(i.kind == 'model' for i in items)} models)")
    if args.dry_run or not items:
        return 0
    failed = [(i, e) for i, e in fetch(items) if e]
    for item, err in failed:
        print(f"FAILED {item.describe()}: {err}")
    if failed:
        print("gated models need HF_TOKEN (or `hf auth login`) and an accepted licence on the hub")
    return 1 if failed else 0
