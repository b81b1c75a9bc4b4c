"""Every module opens with its own paragraph, and that paragraph stays true: no
data-flow prose (the import-linter contracts and
docs/architecture.md say that), and every module or name it cites in backticks
(`reactors.nodes.ssh_ops`, `events.store.EventStore`) exists. Read statically, so
nothing is imported.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = (
    "events",
    "reactors",
    "orchestrator",
    "simulators",
    "nodehelper",
    "devtools",
    "bench",
    "tests",
)
FLOW = re.compile(r"\b[Cc]omes (after|before|first)\b")


def _modules() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def _module_file(dotted: list[str]) -> Path | None:
    base = ROOT.joinpath(*dotted)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _names(body: list[ast.stmt]) -> set[str]:
    names: set[str] = set()
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, ast.If | ast.Try):
            names |= _names(node.body)
    return names


def _resolves(ref: str) -> bool:
    parts = ref.split(".")
    for cut in range(len(parts), 0, -1):
        path = _module_file(parts[:cut])
        if path is None:
            continue
        rest = parts[cut:]
        if not rest:
            return True
        tree = ast.parse(path.read_text())
        if rest[0] not in _names(tree.body):
            return _module_file([*parts[:cut], rest[0]]) is not None
        if len(rest) > 1:
            cls = next(
                (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == rest[0]),
                None,
            )
            return cls is None or rest[1] in _names(cls.body)
        return True
    return False


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_module_docstring_is_present_current_and_without_data_flow(path: Path) -> None:
    doc = ast.get_docstring(ast.parse(path.read_text()))
    if path.name.startswith("test_") or path.name == "conftest.py":
        doc = doc or ""
    else:
        assert doc, f"{path.relative_to(ROOT)} has no module docstring"
    assert not FLOW.search(doc), "data flow belongs in the contracts and docs/architecture.md"
    refs = {r for r in re.findall(r"`([A-Za-z_][\w.]*)", doc) if r.split(".")[0] in PACKAGES}
    missing = sorted(r for r in refs if "." in r and not _resolves(r))
    assert not missing, f"docstring names what does not exist: {missing}"
