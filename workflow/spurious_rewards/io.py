"""Small file helpers shared by every pipeline step.

Why these exist:

* every output is written through :func:`atomic_output`, so a job that is killed
  (OOM, SIGKILL, node loss) never leaves a half-written file that Snakemake or DVC
  would later take for a finished output;
* gzip output is byte-reproducible (no timestamp or file name in the header), so
  DVC hashes do not change when nothing changed;
* every reader error is a :class:`DataError` naming the file, the line and the
  field, so a bad input is found in seconds rather than by reading tracebacks;
* an output can carry a provenance *sidecar* (``sidecar=`` below): for a file,
  ``<file>.provenance.json`` beside it, written atomically *before* the file is
  renamed into place (so a published file always has its sidecar); for a folder,
  ``provenance.json`` inside the temporary, published by the same rename.
  ``provenance.record`` builds the record; readers of sample folders match
  ``step*_*.jsonl.gz`` and never see it.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import secrets
import shutil
import zlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import IO, Any

__all__ = [
    "DIR_SIDECAR",
    "GZIP_MAGIC",
    "SIDECAR_SUFFIX",
    "DataError",
    "atomic_output",
    "file_sha256",
    "sidecar_path",
    "iter_jsonl",
    "iter_jsonl_numbered",
    "parse_jsonl",
    "read_jsonl",
    "read_json",
    "write_json",
    "write_jsonl",
]

#: the first two bytes of a gzip stream
GZIP_MAGIC = b"\x1f\x8b"
#: a file output's provenance sidecar is ``<file><SIDECAR_SUFFIX>``
SIDECAR_SUFFIX = ".provenance.json"
#: a folder output's provenance record is ``<folder>/<DIR_SIDECAR>``
DIR_SIDECAR = "provenance.json"


class DataError(ValueError):
    """A problem with input data, located as precisely as we can.

    The message reads ``"{file}:{line}: field '{field}': {problem}"``; ``line`` and
    ``field`` are left out when they do not apply. ``line`` may be a string such as
    ``"row 3"`` for sources that have rows rather than lines (a hub dataset).
    """

    def __init__(
        self,
        file: str | os.PathLike[str],
        problem: str,
        *,
        line: int | str | None = None,
        field: str | None = None,
    ) -> None:
        self.file = str(file)
        self.line = line
        self.field = field
        self.problem = problem
        where = self.file if line is None else f"{self.file}:{line}"
        what = problem if field is None else f"field '{field}': {problem}"
        super().__init__(f"{where}: {what}")


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, sidecar: Mapping[str, Any] | None = None) -> Iterator[Path]:
    """Yield a temporary sibling of ``path``; move it onto ``path`` only if the body succeeds.

    The body creates the temporary as a file or as a directory. It lives in the same
    directory as ``path`` (so the final ``os.replace`` is an atomic rename on one file
    system) and its name holds the pid and a random suffix (so concurrent writers never
    share it). If the body raises, the temporary is removed and ``path`` is untouched.
    A SIGKILLed body cannot clean up, but it leaves only a hidden ``.<stem>.tmp-*``
    sibling, never a partial ``path``. The temporary keeps ``path``'s extension.

    ``sidecar``: a JSON-ready provenance record published with the output. A folder gets
    it as ``provenance.json`` inside the temporary; a file gets ``<path>.provenance.json``
    (the record plus the file's ``sha256``), written atomically after the body succeeded
    and *before* the file is renamed onto ``path``. A kill in between leaves a new
    sidecar beside the old (or no) file; the ``sha256`` tells which content it describes.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(_sibling_name(target.name, "tmp"))
    try:
        yield tmp
        if not tmp.exists() and not tmp.is_symlink():
            raise FileNotFoundError(f"atomic_output({target}): the body did not create {tmp}")
        if sidecar is not None:
            _write_sidecar(tmp, target, sidecar)
        _replace(tmp, target)
    except BaseException:
        _remove(tmp)
        raise


def sidecar_path(path: str | os.PathLike[str]) -> Path:
    """Where a file output's provenance sidecar lives: ``<path>.provenance.json``."""
    p = Path(path)
    return p.with_name(p.name + SIDECAR_SUFFIX)


def file_sha256(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _write_sidecar(tmp: Path, target: Path, record: Mapping[str, Any]) -> None:
    if tmp.is_dir():
        _dump_json(dict(record), tmp / DIR_SIDECAR)  # published by the folder's own rename
    else:
        write_json({**record, "sha256": file_sha256(tmp)}, sidecar_path(target))


def _sibling_name(name: str, tag: str) -> str:
    """``.<stem>.<tag>-<pid>-<random><suffixes>``: hidden, unique, and keeping the extension.

    The extension is kept last because many writers pick the format from it
    (``savefig``, pandas compression inference, ``.gz`` here).
    """
    suffix = "".join(Path(name).suffixes)
    stem = name[: len(name) - len(suffix)] if suffix else name
    return f".{stem}.{tag}-{os.getpid()}-{secrets.token_hex(4)}{suffix}"


def _replace(tmp: Path, target: Path) -> None:
    """``os.replace``, extended to an existing directory target (which rename refuses when non-empty)."""
    if target.is_dir() and not target.is_symlink():
        old = target.with_name(_sibling_name(target.name, "old"))
        os.replace(target, old)
        try:
            os.replace(tmp, target)
        except BaseException:
            os.replace(old, target)
            raise
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, target)


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def write_jsonl(
    records: Iterable[Any], path: str | os.PathLike[str], *, sidecar: Mapping[str, Any] | None = None
) -> int:
    """Write one JSON value per line, atomically; gzip when ``path`` ends in ``.gz``.

    Non-ASCII text is kept as UTF-8 (readable diffs). The gzip header carries no name
    and ``mtime=0``, so equal records give equal bytes. Returns the number of lines.
    ``sidecar``: see :func:`atomic_output`.
    """
    with atomic_output(path, sidecar=sidecar) as tmp, open(tmp, "wb") as raw:
        if str(path).endswith(".gz"):
            with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
                return _dump_lines(records, gz)
        return _dump_lines(records, raw)


def _dump_lines(records: Iterable[Any], out: IO[bytes]) -> int:
    n = 0
    for rec in records:
        out.write(json.dumps(rec, ensure_ascii=False).encode("utf-8") + b"\n")
        n += 1
    return n


def iter_jsonl_numbered(path: str | os.PathLike[str]) -> Iterator[tuple[int, Any]]:
    """Stream ``(line_number, value)`` pairs (1-based) from a JSONL file, gzip-aware.

    Blank lines are skipped. Bytes that are not UTF-8, invalid JSON and a corrupt or
    truncated gzip stream raise :class:`DataError` naming the file and the line.
    """
    p = Path(path)
    with open(p, "rb") as raw:
        stream: IO[bytes] = (
            gzip.GzipFile(fileobj=raw, mode="rb") if raw.peek(2)[:2] == GZIP_MAGIC else raw  # type: ignore[attr-defined]
        )
        lineno = 0
        lines = iter(stream)
        while True:
            try:
                data = next(lines)
            except StopIteration:
                return
            except (OSError, EOFError) as exc:  # gzip.BadGzipFile is an OSError
                raise DataError(p, f"corrupt compressed data: {exc}", line=lineno + 1) from exc
            lineno += 1
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(
                    p,
                    f"not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {exc.start + 1})",
                    line=lineno,
                ) from exc
            if not text.strip():
                continue
            try:
                value = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(p, f"invalid JSON: {exc.msg} (column {exc.colno})", line=lineno) from exc
            yield lineno, value


def parse_jsonl(path: str | os.PathLike[str]) -> list | None:
    """Every value of a JSONL file (gzip-aware) parsed in one C call; None where :func:`iter_jsonl` must decide.

    Why: per-line ``json.loads`` and the line iterator were most of the analysis's CPU
    time (tens of thousands of sample files and training logs). The file is
    decompressed, its non-blank lines joined into one JSON array and parsed at once; any
    surprise (bad gzip, bad UTF-8, bad JSON, a line holding more or less than one value)
    gives None, and :func:`iter_jsonl` then gives the same values or raises the
    :class:`DataError` that names the line.
    """
    try:
        data = Path(path).read_bytes()
        if data[:2] == GZIP_MAGIC:
            data = gzip.decompress(data)
        data.decode("utf-8")  # iter_jsonl reports bad bytes with their line
        lines = [ln for ln in data.split(b"\n") if ln.strip()]
        rows = json.loads(b"[" + b",".join(lines) + b"]")
        if len(rows) != len(lines):  # e.g. a line "{...},{...}": invalid JSONL, valid inside an array
            raise ValueError("line/value count mismatch")
    except (OSError, EOFError, ValueError, zlib.error):
        return None
    return rows


def read_jsonl(path: str | os.PathLike[str]) -> list:
    """``list(iter_jsonl(path))``: the same values and the same errors, in one C call where the file allows."""
    rows = parse_jsonl(path)
    return rows if rows is not None else list(iter_jsonl(path))


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[Any]:
    """Stream the values of a JSONL file (see :func:`iter_jsonl_numbered` for the errors)."""
    for _, value in iter_jsonl_numbered(path):
        yield value


def write_json(obj: Any, path: str | os.PathLike[str], *, sidecar: Mapping[str, Any] | None = None) -> None:
    """Write JSON atomically with sorted keys and indent 2, so equal objects give equal bytes.

    ``sidecar``: see :func:`atomic_output`.
    """
    with atomic_output(path, sidecar=sidecar) as tmp:
        _dump_json(obj, tmp)


def _dump_json(obj: Any, path: Path) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, sort_keys=True, indent=2, ensure_ascii=False)
        f.write("\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read one JSON document; bad bytes or bad JSON raise :class:`DataError` with the line."""
    p = Path(path)
    data = p.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(p, f"not valid UTF-8 (byte 0x{data[exc.start]:02x})", line=line) from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(p, f"invalid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno) from exc
