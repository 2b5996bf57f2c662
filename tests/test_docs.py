"""The documentation a user has is the one the code cites.

Code, presets, tests and pages cite the pages in docs/ by anchor
(``docs/method.md#operating-point``), never a design file outside the repository or a
tracker's issue number, which a user does not have. This file checks, by reading the
sources (nothing imported):

- no project file cites the old design file or an issue by its number (an upstream
  project's issue, named with the project, may be cited);
- every ``docs/<page>.md#<anchor>`` cited anywhere names a heading of that page;
- every relative link of the pages (docs/, README.md, studies/README.md) reaches a file,
  and its anchor, if any, a heading there.

results/ is left out: it is generated data, rendered again by ``python -m bench report``.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCANNED_DIRS = ("annsnn", "interop", "tracking", "lightning_modules", "bench", "studies", "tests", "docs")
SCANNED_FILES = ("README.md", "reproduce.sh", "pyproject.toml")
BINARY = {".png", ".jpg", ".jpeg", ".gif", ".pt", ".ckpt", ".db", ".gz", ".pyc", ".npz", ".pkl"}
PAGES = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md", ROOT / "studies" / "README.md"]

# Written in pieces so that this file does not match itself.
OLD_DESIGN = re.compile(r"\bDE" r"SIGN\b")
ISSUE_NUMBER = re.compile(r"(?i)(?:\b([\w.-]+)\s+)?\bissues?\s*#?\d+")
THE_ISSUE = re.compile(r"(?i)\bthe\s+issue'?s\b")
# Other projects' trackers may be cited by number when the project is named before it.
UPSTREAM = {"optuna", "snntorch", "pytorch", "torch", "torchvision", "mlflow", "lightning", "numpy",
            "scipy", "art", "nir", "neurobench", "spikingjelly", "omegaconf", "seaborn", "hypothesis"}
CITED_ANCHOR = re.compile(r"docs/([\w-]+\.md)#([\w-]+)")
LINK = re.compile(r"\]\(([^)\s]+)\)")
FENCE = re.compile(r"^ *```.*?^ *```[ \t]*$", flags=re.S | re.M)


def project_files() -> list[Path]:
    out = [ROOT / f for f in SCANNED_FILES if (ROOT / f).is_file()]
    for d in SCANNED_DIRS:
        out += [p for p in sorted((ROOT / d).rglob("*"))
                if p.is_file() and p.suffix not in BINARY and "__pycache__" not in p.parts]
    return out


def text_of(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return None


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    s = heading.strip().lower()
    s = re.sub(r"[^\w\- ]", "", s)
    return s.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """The anchors of a Markdown page's headings (headings inside code blocks do not count)."""
    text = FENCE.sub("", page.read_text())
    return {slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, flags=re.M)}


def stale_citations(text: str) -> list[str]:
    hits = [m.group(0) for m in OLD_DESIGN.finditer(text)]
    hits += [m.group(0) for m in ISSUE_NUMBER.finditer(text)
             if (m.group(1) or "").lower().strip(".") not in UPSTREAM]
    hits += [m.group(0) for m in THE_ISSUE.finditer(text)]
    return hits


def test_no_file_cites_the_old_design_file_or_an_issue_number():
    bad = []
    for path in project_files():
        text = text_of(path)
        if text is None:
            continue
        for hit in stale_citations(text):
            line = text[: text.index(hit)].count("\n") + 1
            bad.append(f"{path.relative_to(ROOT)}:{line}: {hit!r}")
    assert not bad, ("cite docs/method.md#<anchor> (or docs/results.md) or say it in plain words:\n"
                     + "\n".join(bad))


def test_every_cited_anchor_is_a_heading():
    known = {p.name: anchors(p) for p in (ROOT / "docs").glob("*.md")}
    bad = []
    for path in project_files():
        text = text_of(path) or ""
        for m in CITED_ANCHOR.finditer(text):
            page, anchor = m.groups()
            if anchor not in known.get(page, set()):
                bad.append(f"{path.relative_to(ROOT)}: docs/{page}#{anchor}")
    assert not bad, "cited anchors that are no heading:\n" + "\n".join(bad)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_of_a_page_resolves(page):
    bad = []
    for m in LINK.finditer(FENCE.sub("", page.read_text())):
        target = m.group(1)
        if re.match(r"^[a-z]+:", target):         # http:, https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        if not dest.exists():
            bad.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target}: no heading with that anchor")
    assert not bad, f"{page.relative_to(ROOT)}:\n" + "\n".join(bad)


def test_the_checks_catch_what_they_are_for(tmp_path):
    assert stale_citations("see " + "DE" + "SIGN section 2") and stale_citations("(issue " + "13)")
    assert stale_citations("Issue " + "11: a race") and stale_citations("The issue" + "'s grid")
    assert not stale_citations("Optuna issue 1092 and snnTorch issue #416; a design choice")
    assert slug("Operating point") == "operating-point"
    assert slug("A new method") == "a-new-method"
    page = tmp_path / "p.md"
    page.write_text("# Title\n\n```python\n# not a heading\n```\n\n## Exact conversion\n")
    assert anchors(page) == {"title", "exact-conversion"}
