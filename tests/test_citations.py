"""Every citation in the code and the README resolves inside this repository.

The one citation form is a repository-relative path to a Markdown file under ``docs/`` with
an optional section anchor: ``docs/errata.md#e1``, ``docs/notes.md#sliding-window``,
``docs/conventions.md#attention-presets``. An anchor resolves when the file declares it
(``<a id="e1"></a>``) or when it is the GitHub slug of one of the file's headings.

Checked here, over refimpl/, properties/, gpu/, tests/, conftest.py and README.md:
- each ``docs/...md`` path exists, and its ``#anchor`` (if any) exists in that file;
- nothing cites a document outside the repository: the teaching notes by number
  ("seed 001 section 14.5", "(003 4.1)"), "ERRATA n" / ERRATA.md, CONVENTIONS.md, DESIGN.md,
  a path into ../shared, or a "§" section mark (the project's form is ``#anchor``);
- each worked example's ``erratum=`` number names an entry of docs/errata.md.
The meta-tests below feed the scanner deliberately bad citations and assert it reports them.
"""

from __future__ import annotations

import functools
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SCANNED_DIRS = ("refimpl", "properties", "gpu", "tests")
SCANNED_FILES = ("README.md", "conftest.py")
#: This file holds deliberately bad citations (the meta-tests) and is not scanned.
SKIPPED = ("tests/test_citations.py",)
SUFFIXES = (".py", ".md", ".json", ".cu", ".cl", ".h", ".c")

#: A citation: docs/<file>.md, optionally #<anchor>. A "{" right after the anchor marks an
#: f-string template (docs/errata.md#e{n}); those are checked through the values they take.
CITATION = re.compile(r"(?<![\w/.-])(docs/[A-Za-z0-9_./-]+?\.md)(?:#([A-Za-z0-9_-]*))?(?![\w{])")

#: Names of documents that live outside the repository (never part of the project).
FOREIGN = (
    (re.compile(r"\bseeds?\s+0\d\d\b", re.I), "the teaching notes by number"),
    (re.compile(r"\(0\d\d\s+(?:sec(?:tion)?s?\.?\s*)?\d+(?:\.\d+)?", re.I), "the teaching notes by number"),
    (re.compile(r"(?<![\w/])0\d\d\s+(?:sections?|sec\.|Problem|Example|Pitfall|Part|Table|Q\d)\b"),
     "the teaching notes by number"),
    (re.compile(r"(?<![\w/.#-])0\d\d\s+\d+\.\d+\b"), "the teaching notes by number"),
    (re.compile(r"\bERRATA\b"), "ERRATA (use docs/errata.md#eN)"),
    (re.compile(r"\bCONVENTIONS\.md\b"), "CONVENTIONS.md (use docs/conventions.md)"),
    (re.compile(r"\bDESIGN\.md\b"), "DESIGN.md"),
    (re.compile(r"(?:\.\./|/work/)shared\b|\bshared/(?:seeds|ERRATA|CONVENTIONS|DESIGN)"), "a path into shared/"),
    (re.compile("\u00a7"), "a section mark (use docs/<file>.md#<anchor>)"),
)

_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_EXPLICIT = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"")


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`|\*\*|\*|_(?=\w)|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading)
    text = re.sub(r"<[^>]+>", "", text).strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


@functools.lru_cache(maxsize=None)
def anchors(path: pathlib.Path) -> frozenset[str]:
    """Every anchor a Markdown file offers: explicit ``<a id>`` ones and heading slugs."""
    found: set[str] = set()
    seen: dict[str, int] = {}
    fence = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fence = not fence
            continue
        if fence:
            continue
        found.update(_EXPLICIT.findall(line))
        m = _HEADING.match(line)
        if m:
            slug = github_slug(m.group(2))
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            found.add(slug if n == 0 else f"{slug}-{n}")
    return frozenset(found)


def check_text(text: str, where: str, root: pathlib.Path = ROOT) -> list[str]:
    """Problems with the citations in ``text`` (``where`` names it in the messages)."""
    problems = []
    for lineno, line in enumerate(text.splitlines(), 1):
        for pattern, what in FOREIGN:
            m = pattern.search(line)
            if m:
                problems.append(f"{where}:{lineno}: cites {what} ({m.group(0)!r}); "
                                f"cite a section of the project's docs/ instead")
        for m in CITATION.finditer(line):
            rel, anchor = m.group(1), m.group(2)
            target = root / rel
            if not target.is_file():
                problems.append(f"{where}:{lineno}: {rel} does not exist")
            elif anchor is not None and anchor not in anchors(target):
                problems.append(f"{where}:{lineno}: {rel} has no section #{anchor} "
                                f"(add <a id=\"{anchor}\"></a> there or fix the citation)")
    return problems


def scanned_files(root: pathlib.Path = ROOT) -> list[pathlib.Path]:
    files = [root / f for f in SCANNED_FILES if (root / f).is_file()]
    for d in SCANNED_DIRS:
        files.extend(p for p in sorted((root / d).rglob("*"))
                     if p.is_file() and p.suffix in SUFFIXES and "__pycache__" not in p.parts
                     and str(p.relative_to(root)) not in SKIPPED)
    return files


def citations(root: pathlib.Path = ROOT) -> list[tuple[str, str, str | None]]:
    """(file, docs path, anchor) for every citation in the scanned files."""
    out = []
    for p in scanned_files(root):
        for m in CITATION.finditer(p.read_text(encoding="utf-8")):
            out.append((str(p.relative_to(root)), m.group(1), m.group(2)))
    return out


def test_every_citation_resolves_and_none_names_an_outside_document():
    problems = []
    for p in scanned_files():
        problems += check_text(p.read_text(encoding="utf-8"), str(p.relative_to(ROOT)))
    assert not problems, f"{len(problems)} unresolved citations:\n" + "\n".join(problems)


def test_the_scan_sees_the_citations():
    """Guards the scanner itself: it finds the code's citations of each project document."""
    cited = {(rel, anchor) for _, rel, anchor in citations()}
    for doc in ("docs/notes.md", "docs/errata.md", "docs/conventions.md"):
        assert sum(1 for rel, a in cited if rel == doc and a) >= 5, doc


def test_worked_example_errata_exist():
    from properties.examples import all_examples

    known = anchors(ROOT / "docs" / "errata.md")
    numbers = [ex.erratum for ex in all_examples() if ex.erratum is not None]
    assert numbers, "no worked example names an erratum: the check would be vacuous"
    assert all(f"e{n}" in known for n in numbers), [n for n in numbers if f"e{n}" not in known]


def test_errata_numbered_without_gaps():
    known = anchors(ROOT / "docs" / "errata.md")
    numbers = sorted(int(a[1:]) for a in known if re.fullmatch(r"e\d+", a))
    assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) >= 29, numbers


def test_readme_points_at_the_docs():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for doc in ("docs/errata.md", "docs/conventions.md", "docs/notes.md"):
        assert doc in readme, doc


# ------------------------------------------------------------------ meta-tests: the check can fail

@pytest.mark.parametrize("bad", [
    "(seed 001 section 14.5)",
    "Seed 003 4.10's table",
    "the figures (001 13.2) and (000 section 1)",
    "001 21.1; 004 Part A",
    "000 Problem 3 writes C = ...",
    "ERRATA 7: only the diagonal",
    "see CONVENTIONS.md",
    "DESIGN.md says so",
    "/work/shared/ERRATA.md",
    "../shared/seeds/000.txt",
    "[docs/notes.md \u00a7sliding-window]",
    "docs/errata.md#e999",
    "docs/notes.md#no-such-section",
    "docs/no_such_file.md#x",
    "docs/no_such_file.md",
])
def test_scanner_rejects_a_bad_citation(bad):
    assert check_text(f'"""A docstring. {bad}"""', "fake.py"), bad


@pytest.mark.parametrize("good", [
    "(docs/errata.md#e1)",
    "docs/notes.md#sliding-window and docs/conventions.md#moe-presets",
    "see docs/vision.md",
    "random seed 0 is the first one tried; seed=3",
    "f'docs/errata.md#e{n}'",
])
def test_scanner_accepts_a_good_citation(good):
    assert check_text(good, "fake.py") == [], good


def test_scanner_resolves_heading_slugs_and_explicit_anchors(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "x.md").write_text(
        "# Title\n\n<a id=\"e1\"></a>\n## E1. `causal` mask: inverted!\n\n```\n# not a heading\n```\n")
    ok = "docs/x.md#e1 docs/x.md#title docs/x.md#e1-causal-mask-inverted"
    assert check_text(ok, "t", root=tmp_path) == []
    assert check_text("docs/x.md#not-a-heading", "t", root=tmp_path)


def test_docs_ship_with_the_package():
    """The sdist carries docs/ and a wheel installs the cited files (setup.cfg data_files)."""
    import configparser

    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    data = cfg["options.data_files"]["share/transformer-refimpl/docs"].split()
    shipped = {p.name for pattern in data for p in ROOT.glob(pattern)}
    cited = {pathlib.Path(rel).name for _, rel, _ in citations()}
    assert cited <= shipped, cited - shipped
    assert "graft docs" in (ROOT / "MANIFEST.in").read_text().splitlines()


_MD_LINK = re.compile(r"\]\(([A-Za-z0-9_./-]+\.md)?(?:#([A-Za-z0-9_-]+))?\)")


def test_links_between_the_docs_resolve():
    """Relative Markdown links inside docs/ (errata.md#e21, #e5, vision.md#parameter-counts) resolve."""
    problems, checked = [], 0
    for doc in sorted((ROOT / "docs").glob("*.md")):
        for lineno, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1):
            for m in _MD_LINK.finditer(line):
                target = doc.parent / m.group(1) if m.group(1) else doc
                checked += 1
                if not target.is_file():
                    problems.append(f"docs/{doc.name}:{lineno}: {m.group(1)} does not exist")
                elif m.group(2) and m.group(2) not in anchors(target):
                    problems.append(f"docs/{doc.name}:{lineno}: {target.name} has no section #{m.group(2)}")
    assert checked > 20 and not problems, problems


_TEST_REF = re.compile(r"`?(tests/[\w/]+\.py)::(\w+)")
_MORE_TESTS = re.compile(r"^\s*(?:and\s+)?`(test_\w+)`")


def test_tests_named_in_the_docs_exist():
    """docs/errata.md and docs/conventions.md name the tests that show each pitfall: they must exist."""
    missing, named = [], 0
    for doc in ("errata.md", "conventions.md", "notes.md"):
        text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
        for m in _TEST_REF.finditer(text):
            named += 1
            path = ROOT / m.group(1)
            if not path.is_file() or not re.search(rf"^def {m.group(2)}\b", path.read_text(), re.M):
                missing.append(f"docs/{doc}: {m.group(1)}::{m.group(2)}")
    assert named >= 30 and not missing, missing


def test_worked_examples_named_in_the_errata_exist():
    from properties.examples import all_examples

    names = {ex.name for ex in all_examples()}
    text = (ROOT / "docs" / "errata.md").read_text(encoding="utf-8")
    named = [n for m in re.finditer(r"[Ww]orked examples?\s+((?:`\w+`(?:,\s*|\s+and\s+)?)+)", text)
             for n in re.findall(r"`(\w+)`", m.group(1))]
    assert len(named) >= 20 and set(named) <= names, set(named) - names
