"""The repository's documentation is self-contained: every reference resolves inside it.

Code comments, configs and Markdown cite facts as ``docs/<page>.md §N`` or
``docs/<page>.md, quirk N``. This module checks, over every tracked text file
(``git ls-files``; binary files such as weights and parquet are skipped):

1. **No reference to a document outside the repository.** Every mention of a
   Markdown file (a token ending in ``.md``) names a tracked file, either from the
   repository root (``docs/paper-setup.md``, ``profiles/README.md``) or from the
   citing file's own folder (``plan.md`` inside ``docs/``), or an output of the
   pipeline by its name under ``results/`` (``summary.md``). A name right after a
   quote is a string literal naming a file the code writes (``tmp_path / "B.md"``),
   not a citation, and is not checked. A citation of a page
   the reader does not have (an old bare ``<page>.md §3`` pointing at notes kept
   outside the repository) fails, naming the file and line. Tokens inside URLs are
   not references to this repository and are ignored.
2. **No path into a machine's own tree.** These are never allowed:

   * a path component ``shared/`` (the private reference folder of the machines the
     project was developed on);
   * an absolute path under a per-machine root: ``/work/``, ``/root/``, ``/home/``,
     ``/Users/``, ``/mnt/``, ``/scratch/``;
   * a path under the user's home (``~/``, ``$HOME/``, ``${HOME}/``) other than the
     cache, ``~/.cache`` / ``$HOME/.cache``: the one home location the pipeline uses, as
     a runtime default (``.ci/*-env.sh`` put their isolated venvs there unless told
     otherwise; the Hugging Face and datasets caches live there by default).

   System locations every machine has (``/tmp``, ``/var/tmp``, ``/etc``, ``/dev``,
   ``/proc``, ``/usr``) are allowed: they are scratch space, runtime defaults or test
   inputs (hostile strings), not references to files a reader should have.
3. **Every cited section and quirk exists.** For each ``docs/<page>.md`` followed by
   ``§N``, ``§N.M``, a range ``§A-B`` / ``§A-§B`` (every integer in between), or
   ``quirk N`` / ``quirks N, M and K``, the page has a heading numbered N (``## N.``,
   ``### N.M``) or a quirk entry ``**Quirk N.**``. A citation may run on over a comment
   line break (``docs/paper-setup.md,`` then ``# quirk 7`` on the next line).

This module itself, which spells the patterns out, is not scanned. These checks fail on a tree that still cites the old outside notes; they pass once
every such reference points into ``docs/``.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: This module spells the forbidden patterns out in its docstring and checks; it is not scanned.
SELF = Path(__file__).resolve().relative_to(ROOT).as_posix()

# The component spelled once, for the messages and the self-checks below.
_SHARED = "sha" + "red/"
SHARED_COMPONENT = re.compile(r"(?<![\w.-])" + re.escape(_SHARED))
MACHINE_ROOT = re.compile(r"(?<![\w.~$}/-])/(?:work|root|home|Users|mnt|scratch)/")
HOME_PATH = re.compile(r"(?:~|\$HOME|\$\{HOME\})/(?!\.cache(?:/|\b))")

#: A Markdown file named in text: optional ./ or ../, folder parts without dots, a name.
MD_TOKEN = re.compile(r"(?<![\w/.@:'\"-])((?:\.{1,2}/)*(?:[\w-]+/)*[\w.-]*[\w-]\.md)(?![\w/-]|\.\w)")
#: A citation of one of our docs pages.
DOCS_CITE = re.compile(r"(?<![\w/.-])docs/([\w.-]+\.md)")
#: Between the parts of a citation: spaces, or a line break with a comment leader.
_GAP = r"(?:[ \t]|\n[ \t]*(?:#+|//)?[ \t]*)*"
_NUM = r"\d+(?:\.\d+)*"
SECTION_ITEM = re.compile(
    rf"{_GAP}(?:[,;]{_GAP})?(?:and{_GAP})?§{_GAP}(?P<a>{_NUM})(?:{_GAP}[-–]{_GAP}§?{_GAP}(?P<b>{_NUM}))?"
)
QUIRK_ITEM = re.compile(
    rf"{_GAP}(?:[,;]{_GAP})?(?:and{_GAP})?quirks?{_GAP}(?P<list>\d+(?:{_GAP}(?:,|and|[-–]){_GAP}\d+)*)"
)
HEADING = re.compile(r"^#{1,6}[ \t]+(\d+(?:\.\d+)*)\.?[ \t]", re.MULTILINE)
QUIRK_ENTRY = re.compile(r"^\*\*Quirk (\d+)\.", re.MULTILINE)


@cache
def tracked_files() -> tuple[str, ...]:
    """Tracked paths, relative to the root; the test is skipped outside a git checkout."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"not a git checkout ({exc}); the documentation checks read `git ls-files`")
    return tuple(p for p in out.decode().split("\0") if p)


@cache
def text_files() -> tuple[tuple[str, str], ...]:
    """(path, text) of every tracked file that exists and decodes as UTF-8 without NUL bytes."""
    out = []
    for rel in tracked_files():
        if rel == SELF:
            continue
        path = ROOT / rel
        if not path.is_file():  # deleted in the work tree, not yet committed
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue
        try:
            out.append((rel, data.decode("utf-8")))
        except UnicodeDecodeError:
            continue
    return tuple(out)


def _line(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _where(rel: str, text: str, offset: int) -> str:
    n = _line(text, offset)
    return f"{rel}:{n}: {text.splitlines()[n - 1].strip()[:120]}"


def _resolves(token: str, rel: str, tracked: set[str]) -> bool:
    """Whether a Markdown token names a tracked file: from the root, the citing file's folder or results/."""
    here = (ROOT / rel).parent
    for base in (ROOT, here, ROOT / "results"):
        try:
            candidate = (base / token).resolve().relative_to(ROOT).as_posix()
        except ValueError:  # points outside the repository
            continue
        if candidate in tracked:
            return True
    return False


def test_no_markdown_reference_outside_the_repository() -> None:
    tracked = set(tracked_files())
    bad = []
    for rel, text in text_files():
        for m in MD_TOKEN.finditer(text):
            if not _resolves(m.group(1), rel, tracked):
                bad.append(f"{_where(rel, text, m.start())}  ->  {m.group(1)!r} is not a tracked file")
    assert not bad, "references to Markdown files the repository does not have:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    ("name", "pattern"),
    [("a path component " + _SHARED, SHARED_COMPONENT), ("a per-machine absolute path", MACHINE_ROOT),
     ("a home-directory path other than ~/.cache", HOME_PATH)],
)
def test_no_path_into_a_machines_own_tree(name: str, pattern: re.Pattern[str]) -> None:
    bad = [_where(rel, text, m.start()) for rel, text in text_files() for m in pattern.finditer(text)]
    assert not bad, f"{name} in tracked files:\n" + "\n".join(bad)


def _numbers(page: str) -> tuple[set[str], set[int]]:
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    return set(HEADING.findall(text)), {int(q) for q in QUIRK_ENTRY.findall(text)}


def _expand(a: str, b: str | None) -> list[str]:
    """``§A-B``: A and B, and every integer between them when both are integers."""
    if b is None:
        return [a]
    if a.isdigit() and b.isdigit() and int(a) <= int(b):
        return [str(i) for i in range(int(a), int(b) + 1)]
    return [a, b]


def parse_citation(text: str, pos: int) -> tuple[list[str], list[int]]:
    """The sections and quirks cited right after a ``docs/<page>.md`` ending at ``pos``."""
    sections: list[str] = []
    quirks: list[int] = []
    while True:
        s = SECTION_ITEM.match(text, pos)
        if s:
            sections += _expand(s.group("a"), s.group("b"))
            pos = s.end()
            continue
        q = QUIRK_ITEM.match(text, pos)
        if q:
            items = [int(x) for x in re.findall(r"\d+", q.group("list"))]
            if re.search(r"[-–]", q.group("list")) and len(items) == 2:
                items = list(range(items[0], items[1] + 1))
            quirks += items
            pos = q.end()
            continue
        return sections, quirks


def citations() -> list[tuple[str, str, str, list[str], list[int]]]:
    """Every ``docs/<page>.md`` citation: (where, citing file, page, sections, quirks)."""
    out = []
    for rel, text in text_files():
        for m in DOCS_CITE.finditer(text):
            sections, quirks = parse_citation(text, m.end())
            out.append((_where(rel, text, m.start()), rel, m.group(1), sections, quirks))
    return out


def test_cited_docs_pages_sections_and_quirks_exist() -> None:
    tracked = set(tracked_files())
    bad = []
    for where, _rel, page, sections, quirks in citations():
        if f"docs/{page}" not in tracked:
            bad.append(f"{where}  ->  docs/{page} does not exist (or is not tracked)")
            continue
        headings, quirk_numbers = _numbers(page)
        bad += [f"{where}  ->  docs/{page} has no section {s}" for s in sections if s not in headings]
        bad += [f"{where}  ->  docs/{page} has no quirk {q}" for q in quirks if q not in quirk_numbers]
    assert not bad, "broken citations of docs/ pages:\n" + "\n".join(bad)


def test_the_citation_parser_reads_every_form() -> None:
    """The forms the code uses are all understood (a parser that read nothing would pass vacuously)."""
    def parse(text: str) -> tuple[list[str], list[int]]:
        m = DOCS_CITE.search(text)
        assert m
        return parse_citation(text, m.end())

    assert parse("see docs/openrlhf.md §7-8: flash") == (["7", "8"], [])
    assert parse("(docs/datasets.md §0-§5)") == (["0", "1", "2", "3", "4", "5"], [])
    assert parse("(docs/paper-setup.md §5.2, Fig. 7)") == (["5.2"], [])
    assert parse("drifts (docs/paper-setup.md,\n# quirk 7): record") == ([], [7])
    assert parse("docs/paper-setup.md, quirks 2, 11 and 14.") == ([], [2, 11, 14])
    assert parse("docs/paper-setup.md, quirks) are deliberate") == ([], [])
    # and what the checks would flag
    assert SHARED_COMPONENT.search("see /work/" + _SHARED + "reference/x.md")
    assert not SHARED_COMPONENT.search("a <shared-fs>/hf-cache folder")
    assert MACHINE_ROOT.search("venv at /work/main/.venv") and MACHINE_ROOT.search("/root/.bashrc")
    assert not MACHINE_ROOT.search("https://example.org/home/page and /tmp/x")
    assert HOME_PATH.search("notes in ~/notes.md") and not HOME_PATH.search("${XDG_CACHE_HOME:-$HOME/.cache}/x")
    assert MD_TOKEN.findall("see paper-setup.md §2 and docs/x.md; not https://github.com/a/b/README.md") == [
        "paper-setup.md", "docs/x.md"]
    assert MD_TOKEN.findall("from templates/summary.md.jinja, written to summary.md.") == ["summary.md"]


def test_every_docs_page_is_cited_or_linked_from_the_readme() -> None:
    """A page nobody points to is a page nobody finds: each is cited somewhere, or named in README.md."""
    pages = [p.removeprefix("docs/") for p in tracked_files() if re.fullmatch(r"docs/[\w.-]+\.md", p)]
    cited = {page for _where, rel, page, _s, _q in citations() if rel != f"docs/{page}"}
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    orphans = [p for p in pages if p not in cited and f"docs/{p}" not in readme]
    assert not orphans, f"docs pages nothing cites and README.md does not name: {orphans}"
