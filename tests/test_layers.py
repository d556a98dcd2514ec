"""The package's layers, read from its import statements with ``ast`` (README "Layout").

Every import of ``pupsnr_dask`` points down :data:`LAYERS` (or stays inside its layer, without a
circle); the kernels import no dask, zarr, fsspec or xarray; the library never imports the
presentation (``report/``) or the command line (``cli/``); no module imports our package inside
a function except the command modules of ``cli/`` (which do so on purpose, so that ``--help``
answers before dask is imported); nothing reads ``__version__`` back from the package.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pupsnr_dask"

#: The layers, lowest first: a module may import modules of its own layer or of a lower one.
#: A name is a module (``cluster``) or a folder (``kernels``), relative to ``pupsnr_dask``.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("constants", ("defaults", "_version")),
    ("kernels", ("kernels",)),
    ("storage", ("schema", "store")),
    (
        "pipeline",
        ("cluster", "kube", "ingest", "experiment", "model", "registry", "transforms", "samples"),
    ),
    ("questions", ("query", "verify", "advise", "grid", "export")),
    ("presentation", ("report",)),
    ("cli", ("helptext", "cli", "__main__", "__init__")),
)
#: What the kernels may not import (NumPy, Pillow and SciPy only: they run on any array).
KERNEL_FORBIDDEN = ("dask", "distributed", "zarr", "fsspec", "xarray")
#: Imports of our package inside a function, outside cli/, that are known and owned by another
#: helper (README "Layout"): module -> imported module. Each is xfail(strict=True) below, so
#: that the test turns red when the import is moved up and the entry must be removed.
KNOWN_FUNCTION_IMPORTS: dict[str, str] = {}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> int:
    """Index in :data:`LAYERS` of a ``pupsnr_dask`` module name."""
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for i, (_, names) in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no layer of LAYERS: add it to tests/test_layers.py")


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    is_package = MODULES[module].name == "__init__.py"
    base = module.split(".")[: len(module.split(".")) - node.level + (1 if is_package else 0)]
    return ".".join([*base, node.module] if node.module else base)


class _Imports(ast.NodeVisitor):
    """Every import of a module: (imported name, line, inside a function, under TYPE_CHECKING)."""

    def __init__(self, module: str) -> None:
        self.module = module
        self.found: list[tuple[str, int, bool, bool]] = []
        self._depth = 0
        self._type_checking = 0

    def _function(self, node: ast.AST) -> None:
        self._depth += 1
        self.generic_visit(node)
        self._depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _function

    def visit_If(self, node: ast.If) -> None:
        test = node.test
        name = test.id if isinstance(test, ast.Name) else getattr(test, "attr", None)
        if name == "TYPE_CHECKING":
            self._type_checking += 1
            for child in node.body:
                self.visit(child)
            self._type_checking -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def _add(self, name: str, line: int) -> None:
        self.found.append((name, line, self._depth > 0, self._type_checking > 0))

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name, node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = _resolve(self.module, node)
        for alias in node.names:
            full = f"{base}.{alias.name}"
            # ``from pupsnr_dask import schema`` imports the module pupsnr_dask.schema;
            # ``from pupsnr_dask import compute`` reads a name of the package's __init__.
            self._add(full if full in MODULES else base, node.lineno)


def _imports(module: str) -> list[tuple[str, int, bool, bool]]:
    return _parsed(module, MODULES[module])


@functools.cache
def _parsed(module: str, path: Path) -> list[tuple[str, int, bool, bool]]:
    visitor = _Imports(module)
    visitor.visit(ast.parse(path.read_text(), filename=str(path)))
    return visitor.found


def _ours(name: str) -> str | None:
    """The module of ``pupsnr_dask`` that an imported name is, or None for another package."""
    if name != "pupsnr_dask" and not name.startswith("pupsnr_dask."):
        return None
    while name not in MODULES:  # pupsnr_dask.kernels.image.load_resized -> the module
        name = name.rpartition(".")[0]
    return name


def test_every_module_is_in_one_layer():
    for module in MODULES:
        _layer(module)


def test_the_layers_hold_every_top_level_name_once():
    names = [name for _, layer in LAYERS for name in layer]
    assert len(names) == len(set(names))
    tops = {m.split(".")[1] if "." in m else "__init__" for m in MODULES}
    assert set(names) == tops, "LAYERS names a module that is gone, or misses one"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_point_down_the_layers(module):
    upward = [
        f"{MODULES[module].relative_to(PACKAGE.parent)}:{line} imports {target} "
        f"({LAYERS[_layer(target)][0]} above {LAYERS[_layer(module)][0]})"
        for name, line, _, type_only in _imports(module)
        if (target := _ours(name)) is not None and not type_only
        if _layer(target) > _layer(module)
    ]
    assert not upward


def test_no_import_circle():
    graph = {
        module: {
            target
            for name, _, in_function, type_only in _imports(module)
            if (target := _ours(name)) not in (None, module) and not type_only and not in_function
        }
        for module in MODULES
    }
    # A package's __init__ is imported with each of its modules: not an edge back to it.
    for module, targets in graph.items():
        graph[module] = {t for t in targets if not module.startswith(t + ".")}
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                raise AssertionError("import circle: " + " -> ".join([*path, module, target]))
            if target not in state:
                visit(target, [*path, module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if m.startswith("pupsnr_dask.kernels"))
)
def test_kernels_import_no_dask_zarr_fsspec_or_xarray(module):
    heavy = [
        f"line {line}: {name}"
        for name, line, _, _ in _imports(module)
        if name.split(".")[0] in KERNEL_FORBIDDEN
    ]
    assert not heavy


@pytest.mark.parametrize(
    "module", sorted(m for m in MODULES if _layer(m) < _layer("pupsnr_dask.report"))
)
def test_the_library_never_imports_report_or_cli(module):
    found = [
        f"line {line}: {name}"
        for name, line, _, _ in _imports(module)  # inside functions and TYPE_CHECKING too
        if (target := _ours(name)) is not None
        if target.startswith(("pupsnr_dask.report", "pupsnr_dask.cli"))
    ]
    assert not found


def _function_imports(module: str) -> list[str]:
    return [
        target
        for name, _, in_function, _ in _imports(module)
        if in_function and (target := _ours(name)) is not None
    ]


@pytest.mark.parametrize(
    "module",
    [
        pytest.param(
            m,
            marks=pytest.mark.xfail(
                strict=True, reason=f"known: imports {KNOWN_FUNCTION_IMPORTS[m]} in a function"
            ),
        )
        if m in KNOWN_FUNCTION_IMPORTS
        else m
        for m in sorted(MODULES)
        if not m.startswith("pupsnr_dask.cli")
    ],
)
def test_no_import_of_our_package_inside_a_function(module):
    assert _function_imports(module) == []


def test_the_known_function_imports_are_what_they_say():
    # The xfail entries above fail for the reason named, not for another one.
    for module, target in KNOWN_FUNCTION_IMPORTS.items():
        assert target in _function_imports(module)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_reads_the_version_back_from_the_package(module):
    tree = ast.parse(MODULES[module].read_text())
    back = [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
        and _resolve(module, node) == "pupsnr_dask"
        and any(alias.name == "__version__" for alias in node.names)
    ]
    assert not back, "import it from pupsnr_dask._version"


def test_the_checker_sees_what_it_checks(tmp_path):
    # The visitor finds an import inside a function, tells TYPE_CHECKING apart and resolves a
    # relative import: a checker that sees nothing would pass everything.
    (tmp_path / "probe.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "from .. import schema\n"
        "if TYPE_CHECKING:\n    from pupsnr_dask.report import html\n"
        "def f():\n    from pupsnr_dask.cli import main\n"
    )
    MODULES["pupsnr_dask.store._probe"] = tmp_path / "probe.py"
    try:
        found = _imports("pupsnr_dask.store._probe")
    finally:
        del MODULES["pupsnr_dask.store._probe"]
    assert found == [
        ("typing", 1, False, False),
        ("pupsnr_dask.schema", 2, False, False),
        ("pupsnr_dask.report.html", 4, False, True),
        ("pupsnr_dask.cli", 6, True, False),
    ]
