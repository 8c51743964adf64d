"""Exact (static) test: the distributions package is pure torch; its source imports no Ray
(habit 2).

(The parent package ``fttpo_ray`` registers the RLlib algorithm on import, so this checks the
distribution modules' own import statements rather than ``sys.modules``.)
"""

from __future__ import annotations

import ast
from pathlib import Path

import fttpo_ray.distributions


def test_exact_distribution_modules_import_no_ray() -> None:
    """Exact: no ``import ray`` / ``from ray...`` in any module of fttpo_ray.distributions."""
    package_dir = Path(fttpo_ray.distributions.__file__).parent
    sources = sorted(package_dir.glob("*.py"))
    assert sources
    for path in sources:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not any(n == "ray" or n.startswith("ray.") for n in names), (path, names)
