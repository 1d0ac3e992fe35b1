"""No module imports a layer above it: read from the source with `ast`, nothing is imported."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parents[2]
# Each folder holds top-level packages: courseflow and projections here, courseflow_local in devtools/.
SOURCES = ((ROOT, ROOT / "courseflow"), (ROOT, ROOT / "projections"), (ROOT / "devtools", ROOT / "devtools"))

# Lowest first. A module may import its own layer and those below it.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("courseflow.platform", "courseflow.sql"),
    ("courseflow.domain", "courseflow.events", "courseflow.errors", "courseflow.fairness"),
    ("courseflow.eventstore",),
    ("courseflow.intake",),
    ("courseflow.decisions",),
    ("projections",),
    ("courseflow.http",),
    # The local servers are development tooling outside the wheel: only the commands may reach for them.
    ("courseflow.cli", "courseflow.commands", "courseflow.check", "courseflow.__main__", "courseflow_local"),
)

# Upward imports still to remove, each by moving what it needs downwards: this list only shrinks, to empty.
ALLOWED: frozenset[tuple[str, str]] = frozenset()


class Import(msgspec.Struct, frozen=True):
    module: str
    line: int
    imported: str


def layer(module: str) -> int | None:
    """The layer of a module of ours; None for the standard library and dependencies."""
    for index, prefixes in enumerate(LAYERS):
        if any(module == prefix or module.startswith(prefix + ".") for prefix in prefixes):
            return index
    return None


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(root: Path, path: Path) -> Iterator[Import]:
    """Every import in the file, also those inside functions and `if TYPE_CHECKING:` blocks."""
    module = module_name(root, path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module, node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                # `from courseflow import cli` imports courseflow.cli, not the package alone.
                yield Import(module, node.lineno, base if layer(base) is not None else f"{base}.{alias.name}")


def allowed(imp: Import) -> bool:
    return any(
        imp.module == module and (imp.imported == target or imp.imported.startswith(target + "."))
        for module, target in ALLOWED
    )


def upward(root: Path, path: Path) -> list[str]:
    found = []
    for imp in imports(root, path):
        own, theirs = layer(imp.module), layer(imp.imported)
        if own is not None and theirs is not None and theirs > own and not allowed(imp):
            found.append(f"{path.relative_to(root)}:{imp.line} {imp.module} imports {imp.imported}")
    return found


def modules() -> Iterator[tuple[Path, Path]]:
    for root, folder in SOURCES:
        for path in sorted(folder.rglob("*.py")):
            yield root, path


def test_no_module_imports_a_layer_above_it() -> None:
    assert [line for root, path in modules() for line in upward(root, path)] == []


def test_every_allowed_upward_import_is_still_made() -> None:
    # Once the import is gone its entry goes too, so the list cannot hide a new one of the same pair.
    made = {(imp.module, imp.imported) for root, path in modules() for imp in imports(root, path)}
    stale = [
        pair
        for pair in sorted(ALLOWED)
        if not any(
            module == pair[0] and (target == pair[1] or target.startswith(pair[1] + ".")) for module, target in made
        )
    ]
    assert stale == []


def test_every_module_of_ours_sits_in_a_layer() -> None:
    # A module outside LAYERS would pass the check above unseen: place every new folder or top-level module.
    unplaced = [module_name(root, path) for root, path in modules() if layer(module_name(root, path)) is None]
    assert unplaced == ["courseflow"]


def test_an_upward_import_made_only_for_type_checking_counts(tmp_path: Path) -> None:
    source = tmp_path / "courseflow" / "eventstore" / "store.py"
    source.parent.mkdir(parents=True)
    source.write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from courseflow.http.problems import NotFound\n"
    )
    assert upward(tmp_path, source) == [
        "courseflow/eventstore/store.py:4 courseflow.eventstore.store imports courseflow.http.problems"
    ]


def test_a_relative_upward_import_counts(tmp_path: Path) -> None:
    source = tmp_path / "courseflow" / "intake" / "accept.py"
    source.parent.mkdir(parents=True)
    source.write_text("from ..http import auth\nfrom . import queue\n")
    assert upward(tmp_path, source) == [
        "courseflow/intake/accept.py:1 courseflow.intake.accept imports courseflow.http"
    ]
