"""Every RLlib hook the package overrides carries ``@override(...)`` (RLlib's own convention):
a method of a class derived from an RLlib class whose name an RLlib base class also defines."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import textwrap

import fttpo_ray


def _package_classes() -> list[type]:
    classes = []
    for info in pkgutil.walk_packages(fttpo_ray.__path__, prefix="fttpo_ray."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__:
                classes.append(cls)
    return classes


def _rllib_bases(cls: type) -> list[type]:
    return [base for base in cls.__mro__[1:] if base.__module__.startswith("ray.rllib.")]


def _is_override(decorator: ast.expr) -> bool:
    return (
        isinstance(decorator, ast.Call)
        and isinstance(decorator.func, ast.Name)
        and decorator.func.id == "override"
    )


def test_every_overridden_rllib_hook_is_marked():
    missing = []
    checked = 0
    for cls in _package_classes():
        bases = _rllib_bases(cls)
        if not bases:
            continue
        tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
        for node in tree.body[0].body:
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if not any(node.name in vars(base) for base in bases):
                continue
            checked += 1
            if not any(_is_override(d) for d in node.decorator_list):
                missing.append(f"{cls.__module__}.{cls.__qualname__}.{node.name}")
    assert checked > 20, checked  # the FtTPO config, algorithm, learner, module, ...
    assert not missing, missing
