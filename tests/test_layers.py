"""The package's layers import only downward, no modules import each other in a loop, and the
tuning layer spells no FtTPO hyper-parameter.

Every module of ``fttpo_ray/`` is parsed with :mod:`ast`; every ``import`` statement counts,
wherever it stands (module level, inside a function or a class, under ``if TYPE_CHECKING``),
relative forms (``from . import x``, ``from ..y import z``) included. An import names the most
specific module it loads: ``from fttpo_ray.reporting import report`` imports
``fttpo_ray.reporting.report``, ``from fttpo_ray.evaluation import evaluate_policies`` imports the
package ``fttpo_ray.evaluation`` (its ``__init__``). Parent packages that Python initialises on
the way are not counted (every module would otherwise import ``fttpo_ray/__init__``).

Layers, bottom to top (a module belongs to the layer of its longest matching prefix):

0. base leaf modules: ``errors``, ``metrics``, ``defaults``
1. ``distributions`` 2. ``envs`` 3. ``data`` 4. ``evaluation`` (generic, no algorithm)
5. ``rl_module`` 6. ``algorithms`` 7. ``tuning`` (YAML schema, Tune sweeps, MLflow tracking)
8. ``reporting`` (reports from MLflow) and ``runs`` (``fttpo train`` / ``fttpo eval``), both
   built on tuning
9. ``registry`` and the package's ``__init__`` (registers FtTPO and the environments)
10. ``cli``

A module may import its own layer and the layers below. Any import of a higher layer, and any
import cycle between modules (strongly connected modules, within a layer too), fails the test,
listing each offending import as ``file:line imports module``.

The tuning layer is generic: it reads an algorithm's hyper-parameters through the algorithm's
report vocabulary, so no line of ``fttpo_ray/tuning/`` (code, string or comment) names one of
FtTPO's report parameters (``fttpo_ray/algorithms/fttpo/vocabulary.py``, read here with
:mod:`ast`: importing it would import the whole package).
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGE = "fttpo_ray"

#: Module-name prefixes per layer, bottom to top.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("fttpo_ray.errors", "fttpo_ray.metrics", "fttpo_ray.defaults"),
    ("fttpo_ray.distributions",),
    ("fttpo_ray.envs",),
    ("fttpo_ray.data",),
    ("fttpo_ray.evaluation",),
    ("fttpo_ray.rl_module",),
    ("fttpo_ray.algorithms",),
    ("fttpo_ray.tuning",),
    ("fttpo_ray.reporting", "fttpo_ray.runs"),
    ("fttpo_ray.registry", "fttpo_ray"),
    ("fttpo_ray.cli",),
)


@dataclass(frozen=True)
class Import:
    """``source`` (a module of the package) imports ``target`` at ``path:line``."""

    source: str
    target: str
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line} imports {self.target}"


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file of the package under ``root``."""
    names = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _resolve_relative(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of ``from <level dots><name> import ...`` written in ``module``."""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    if level - 1 > 0:
        base = base[: -(level - 1)]
    return ".".join([*base, name] if name else base)


def _known(name: str, modules: Mapping[str, Path]) -> str | None:
    """The longest prefix of ``name`` that is a module of the package (None: not ours)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports_of(
    module: str, path: Path, modules: Mapping[str, Path], root: Path
) -> Iterator[Import]:
    """Every import of a package module in ``path`` (module ``module``), at any depth; the
    imports name the file relative to ``root``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    is_package = path.name == "__init__.py"
    shown = path.relative_to(root)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                target = _known(alias.name, modules)
                if target is not None:
                    yield Import(module, target, shown, node.lineno)
        elif isinstance(node, ast.ImportFrom):
            base = (
                _resolve_relative(module, is_package, node.level, node.module)
                if node.level
                else node.module or ""
            )
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                target = submodule if submodule in modules else _known(base, modules)
                if target is not None:
                    yield Import(module, target, shown, node.lineno)


def all_imports(root: Path, package: str) -> tuple[dict[str, Path], list[Import]]:
    """The package's modules and their imports of each other, each once (``from m import a, b``
    is one import of ``m``); a module's import of itself is dropped."""
    modules = module_names(root, package)
    found = {
        edge: None
        for module, path in modules.items()
        for edge in imports_of(module, path, modules, root)
        if edge.target != edge.source
    }
    return modules, list(found)


def layer_of(module: str, layers: Sequence[Sequence[str]]) -> int | None:
    """Index of the layer whose longest prefix matches ``module`` (None: in no layer)."""
    best, best_length = None, -1
    for index, prefixes in enumerate(layers):
        for prefix in prefixes:
            matches = module == prefix or module.startswith(prefix + ".")
            if matches and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    return best


def unplaced_modules(modules: Mapping[str, Path], layers: Sequence[Sequence[str]]) -> list[str]:
    """Modules that belong to no layer."""
    return [name for name in modules if layer_of(name, layers) is None]


def upward_imports(imports: Sequence[Import], layers: Sequence[Sequence[str]]) -> list[Import]:
    """Imports of a module in a higher layer than the importing one."""
    upward = []
    for edge in imports:
        source, target = layer_of(edge.source, layers), layer_of(edge.target, layers)
        if source is not None and target is not None and target > source:
            upward.append(edge)
    return upward


def cycle_imports(imports: Sequence[Import]) -> list[list[Import]]:
    """For each import cycle (a strongly connected set of modules), the imports inside it."""
    graph: dict[str, set[str]] = {}
    for edge in imports:
        graph.setdefault(edge.source, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    components = _strongly_connected(graph)
    cycles = []
    for component in components:
        if len(component) < 2:
            continue
        inside = [e for e in imports if e.source in component and e.target in component]
        cycles.append(sorted(inside, key=lambda e: (str(e.path), e.line)))
    return cycles


def _strongly_connected(graph: Mapping[str, set[str]]) -> list[set[str]]:
    """Tarjan's algorithm, iterative (no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = counter
                    counter += 1
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    advanced = True
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                components.append(component)
    return components


def layer_violations(root: Path, package: str, layers: Sequence[Sequence[str]]) -> list[str]:
    """Every unplaced module, upward import and import cycle, one message each."""
    modules, found = all_imports(root, package)
    messages = [
        f"{modules[name].relative_to(root)}: module {name} is in no layer"
        for name in unplaced_modules(modules, layers)
    ]
    messages += [
        f"upward import: {edge} (layer {layer_of(edge.source, layers)} -> "
        f"{layer_of(edge.target, layers)})"
        for edge in upward_imports(found, layers)
    ]
    for cycle in cycle_imports(found):
        members = sorted({e.source for e in cycle})
        messages.append(
            f"import cycle between {', '.join(members)}: " + "; ".join(str(e) for e in cycle)
        )
    return messages


def test_package_imports_only_downward_and_without_cycles() -> None:
    messages = layer_violations(REPO, PACKAGE, LAYERS)
    assert not messages, "\n".join(messages)


def test_the_scan_finds_the_package_and_its_imports() -> None:
    modules, found = all_imports(REPO, PACKAGE)
    assert {"fttpo_ray", "fttpo_ray.cli", "fttpo_ray.reporting.report"} <= set(modules)
    # A module-level import and one inside a function body are both seen.
    assert any(e.source == "fttpo_ray" and e.target == "fttpo_ray.registry" for e in found)
    assert any(
        e.source == "fttpo_ray.reporting.report" and e.target == "fttpo_ray.errors" for e in found
    )


#: Where FtTPO declares its report vocabulary, and the layer that must not spell it.
VOCABULARY_FILE = REPO / PACKAGE / "algorithms" / "fttpo" / "vocabulary.py"
GENERIC_LAYER = REPO / PACKAGE / "tuning"
#: The class whose instances declare the report parameters in :data:`VOCABULARY_FILE`.
REPORT_PARAMETER_CLASS = "ReportParameter"


def declared_parameters(path: Path) -> set[str]:
    """The keys of the ``ReportParameter(key, label)`` instances written in ``path`` (their first
    argument, or ``key=``), read from the source."""
    keys = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if not isinstance(node, ast.Call):
            continue
        name = node.func.id if isinstance(node.func, ast.Name) else None
        if name != REPORT_PARAMETER_CLASS:
            continue
        arguments = [*node.args[:1], *(k.value for k in node.keywords if k.arg == "key")]
        keys.update(a.value for a in arguments if isinstance(a, ast.Constant))
    return keys


def spelled_names(directory: Path, names: set[str], root: Path) -> list[str]:
    """``file:line: name`` for every whole-word occurrence of one of ``names`` in a ``.py`` file
    under ``directory`` (code, strings and comments alike)."""
    if not names:
        return []
    pattern = re.compile(r"\b(" + "|".join(sorted(map(re.escape, names))) + r")\b")
    found = []
    for path in sorted(directory.rglob("*.py")):
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            found += [f"{path.relative_to(root)}:{number}: {m}" for m in pattern.findall(line)]
    return found


def test_fttpo_declares_its_report_parameters() -> None:
    assert {"fat_q", "thin_q", "kl_weight"} <= declared_parameters(VOCABULARY_FILE)


def test_the_tuning_layer_names_no_fttpo_report_parameter() -> None:
    found = spelled_names(GENERIC_LAYER, declared_parameters(VOCABULARY_FILE), REPO)
    assert not found, "\n".join(found)


def test_spelled_names_finds_strings_comments_and_code(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "toy/vocabulary.py": 'A = ReportParameter("alpha", "α")\n'
            'B = ReportParameter(key="beta", label="β")\nC = Other("gamma")\n',
            "toy/generic/a.py": '"""Reads alpha."""\nalpha_max = 1  # beta\nX = "alphabet"\n',
        },
    )
    names = declared_parameters(tmp_path / "toy" / "vocabulary.py")
    assert names == {"alpha", "beta"}
    assert spelled_names(tmp_path / "toy" / "generic", names, tmp_path) == [
        "toy/generic/a.py:1: alpha",
        "toy/generic/a.py:2: beta",
    ]


# ---- the checker itself fails where it must ---------------------------------------------------

TOY = "toy"
TOY_LAYERS = (("toy.low",), ("toy.high",))


def _write(root: Path, files: Mapping[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")


def _toy(tmp_path: Path, files: Mapping[str, str]) -> list[str]:
    base = {
        "toy/__init__.py": "",
        "toy/low/__init__.py": "",
        "toy/high/__init__.py": "",
    }
    _write(tmp_path, {**base, **files})
    return layer_violations(tmp_path, TOY, (("toy",), *TOY_LAYERS))


def test_checker_accepts_downward_imports(tmp_path: Path) -> None:
    messages = _toy(
        tmp_path,
        {
            "toy/low/a.py": "import os\n",
            "toy/high/b.py": "from toy.low import a\nfrom ..low.a import os\n",
        },
    )
    assert messages == []
    _, found = all_imports(tmp_path, TOY)
    assert [(e.source, e.target, str(e.path), e.line) for e in found] == [
        ("toy.high.b", "toy.low.a", "toy/high/b.py", 1),
        ("toy.high.b", "toy.low.a", "toy/high/b.py", 2),
    ]


def test_checker_reports_an_upward_import_inside_a_function(tmp_path: Path) -> None:
    messages = _toy(
        tmp_path,
        {
            "toy/low/a.py": "def f():\n    from toy.high import b\n    return b\n",
            "toy/high/b.py": "X = 1\n",
        },
    )
    assert len(messages) == 1
    assert messages[0].startswith("upward import: ")
    assert "toy/low/a.py:2 imports toy.high.b" in messages[0]


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("from toy.low import b\n", "import toy.low.a\n"),
        ("from . import b\n", "def g():\n    from .a import X\n"),
    ],
    ids=["absolute", "relative-and-in-function"],
)
def test_checker_reports_a_cycle_within_one_layer(tmp_path: Path, first: str, second: str) -> None:
    messages = _toy(tmp_path, {"toy/low/a.py": first + "X = 1\n", "toy/low/b.py": second})
    assert len(messages) == 1
    assert messages[0].startswith("import cycle between toy.low.a, toy.low.b: ")
    assert "toy/low/a.py:1 imports toy.low.b" in messages[0]
    assert "toy/low/b.py" in messages[0]


def test_checker_reports_a_module_in_no_layer(tmp_path: Path) -> None:
    _write(tmp_path, {"toy/__init__.py": "", "toy/low/__init__.py": "", "toy/side.py": ""})
    messages = layer_violations(tmp_path, TOY, TOY_LAYERS)
    assert sorted(messages) == [
        "toy/__init__.py: module toy is in no layer",
        "toy/side.py: module toy.side is in no layer",
    ]
