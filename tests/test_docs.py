"""Docs that cannot drift from the code: the generated pages (docs/configuration.md,
docs/tables.md, the stage table of docs/operations.md) are what the code writes today;
every file and module the README and docs/ name exists; every section an error message or
a docstring points at exists; every link to a section of a doc lands on a heading."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from vrec import schemas as S

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")),
        ROOT / "benchmarks" / "README.md"]
TOP = ("vrec", "dags", "jobs", "tests", "benchmarks", "examples")
PATH = re.compile(r"(?<![\w./-])((?:" + "|".join(TOP) + r")/[A-Za-z0-9_./<>*{}-]*[A-Za-z0-9_/*>}])")
MODULE = re.compile(r"(?<![\w./-])(vrec(?:\.[a-z_][a-z0-9_]*)+)")
SOURCES = sorted(p for d in ("vrec", "dags", "jobs") for p in (ROOT / d).rglob("*.py"))


def _named_paths() -> list[tuple[str, str]]:
    out = []
    for f in DOCS:
        for i, line in enumerate(f.read_text().splitlines(), 1):
            for m in PATH.finditer(line):
                p = m.group(1).rstrip("/.")
                # placeholders (<name>, *) and hidden, generated folders (.cache) are not files
                if any(ch in p for ch in "<>*{}") or any(s.startswith(".") for s in p.split("/")):
                    continue
                out.append((f"{f.relative_to(ROOT)}:{i}", p))
    return out


@pytest.mark.parametrize("where, path", _named_paths())
def test_named_file_exists(where, path):
    assert (ROOT / path).exists(), f"{where} names {path}, which does not exist"


def _defines(source: Path, name: str) -> bool:
    tree = ast.parse(source.read_text())
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            return True
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                return True
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            if any((a.asname or a.name.split(".")[0]) == name for a in node.names):
                return True
    return False


def _resolve(dotted: str) -> str | None:
    """None when ``dotted`` is a module, or a module and names it defines; else why not."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:n])
        mod = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        if mod.is_file():
            rest = parts[n:]
            if not rest:
                return None
            if _defines(mod, rest[0]):
                return None  # attributes of a class or object: the first name is enough
            return f"{'.'.join(parts[:n])} defines no {rest[0]}"
    return f"no module {dotted}"


def _named_modules() -> list[tuple[str, str]]:
    out = []
    for f in DOCS:
        for i, line in enumerate(f.read_text().splitlines(), 1):
            for m in MODULE.finditer(line):
                dotted = m.group(1).rstrip(".")
                first = dotted.split(".")[1]
                # vrec.<table> is an Airflow Asset's name, vrec.yaml the config file
                if first in S.PUBLISHED or first in ("yaml", "yml"):
                    continue
                out.append((f"{f.relative_to(ROOT)}:{i}", dotted))
    return out


@pytest.mark.parametrize("where, dotted", _named_modules())
def test_named_module_exists(where, dotted):
    why = _resolve(dotted)
    assert why is None, f"{where} names {dotted}: {why}"


def slug(heading: str) -> str:
    """GitHub's anchor of a heading."""
    s = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return s.replace(" ", "-")


def headings(doc: Path) -> list[str]:
    """Markdown headings, without backticks."""
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    return [m.group(1).strip().replace("`", "")
            for m in re.finditer(r"^#{1,6}\s+(.+)$", text, flags=re.M)]


def sections(doc: Path) -> list[str]:
    """What a reference may name: headings, and the bold run-in heads that open a
    paragraph (``**Locks.** Two kinds ...``)."""
    text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
    bold = [m.group(1).strip().replace("`", "") for m in re.finditer(r"^\*\*([^*]+?)\.?\*\*", text, flags=re.M)]
    return headings(doc) + bold


def _doc(name: str) -> Path:
    return ROOT / ("README.md" if name == "README" else name)


SECTION = re.compile(r"""(?<![\w/])((?:benchmarks/)?README(?:\.md)?|docs/[\w-]+\.md)(?:'s)?[ ,]*"""
                     r"""(?:section\s+)?["'“]([^"'”\n]{3,70})["'”]""")


def _section_refs() -> list[tuple[str, str, str]]:
    out = []
    for f in SOURCES + DOCS:
        for i, line in enumerate(f.read_text().splitlines(), 1):
            for m in SECTION.finditer(line):
                out.append((f"{f.relative_to(ROOT)}:{i}", m.group(1), m.group(2)))
    return out


@pytest.mark.parametrize("where, doc, section", _section_refs())
def test_section_a_message_points_at_exists(where, doc, section):
    target = _doc(doc)
    names = [h.lower() for h in sections(target)]
    assert any(h.startswith(section.lower().replace("`", "")) for h in names), \
        f"{where} points at {doc} section {section!r}; its sections: {sections(target)}"


def _links() -> list[tuple[str, Path, str]]:
    out = []
    for f in DOCS:
        for i, line in enumerate(f.read_text().splitlines(), 1):
            for m in re.finditer(r"\]\(([^)#\s]*)#([^)\s]+)\)", line):
                target = f if not m.group(1) else (f.parent / m.group(1)).resolve()
                out.append((f"{f.relative_to(ROOT)}:{i}", target, m.group(2)))
    return out


@pytest.mark.parametrize("where, target, anchor", _links())
def test_link_to_a_section_lands_on_a_heading(where, target, anchor):
    assert target.is_file(), f"{where} links to {target}, which does not exist"
    assert anchor in [slug(h) for h in headings(target)], \
        f"{where} links to {target.name}#{anchor}; its anchors: {[slug(h) for h in headings(target)]}"


def test_the_checks_see_what_they_check():
    # the scanners find the references they are meant to (a regex that matched nothing
    # would pass every test above)
    assert len(_named_paths()) > 50 and len(_named_modules()) > 10
    assert len(_section_refs()) > 5 and len(_links()) > 5
    assert slug("Start-up: what a small night costs") == "start-up-what-a-small-night-costs"
    assert _resolve("vrec.dates.check_ds") is None
    assert _resolve("vrec.nothing_here") == "vrec defines no nothing_here"
    assert _resolve("vrec.io.nothing.here") == "vrec.io defines no nothing"
    assert _resolve("vrec.io.warehouse.no_such_name") == "vrec.io.warehouse defines no no_such_name"


def test_generated_pages_are_current():
    from vrec import docgen

    assert docgen.stale() == [], "stale: run .venv/bin/python -m vrec.docgen"
    tables = (ROOT / "docs" / "tables.md").read_text()
    for name, table in S.PUBLISHED.items():  # every published column is on the page
        for col in table.names():
            assert f"| `{col}` |" in tables, (name, col)
    ops = (ROOT / "docs" / "operations.md").read_text()
    from vrec.stages import STAGES

    for st in STAGES:  # every declared input is in the stage table
        row = next(ln for ln in ops.splitlines() if ln.startswith(f"| {st.name} |"))
        assert all(a in row for a in st.inputs), (st.name, row)


def test_a_missing_marker_is_named():
    from vrec.docgen import replace_blocks

    with pytest.raises(ValueError, match="tables.md lacks the markers of the generated block 'x'"):
        replace_blocks("no markers", {"x": "body"}, "tables.md")
