"""Every shipped YAML resolves to the trial configs of ``data/resolved_configs.json``.

The snapshot was written by :func:`resolve_all` with the code before the YAMLs were shortened
(issue 20): for each run and dataset of each ``tune_configs/*.yaml``, the ``param_space`` that
:func:`fttpo_ray.tuning.space.plan_run` hands to Tune (search domains and the seed grid as plain
data), stored as the keys that differ from the algorithm's default config, plus the algorithm's
default config once. No data is read: the built-ins' data set-up is recorded as the arguments
of ``configure_builtin_offline``, the normalised-score references as the dataset id, and a
dataset's environment is the YAML's ``env``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
CONFIGS = sorted((REPO / "tune_configs").glob("*.yaml"))
SNAPSHOT = Path(__file__).resolve().with_name("data") / "resolved_configs.json"
#: Snapshot keys.
DEFAULTS = "defaults"
PLANS = "plans"
BUILTIN_OFFLINE = "configure_builtin_offline"


def plain(value: Any) -> Any:
    """``value`` as JSON data: Tune domains as ``{kind: values}``, classes and functions by
    name, a ``functools.partial`` as its function and keywords."""
    from ray.tune.search.sample import Categorical, Domain

    if isinstance(value, dict):
        return {str(key): plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, Categorical):
        return {"choice": plain(value.categories)}
    if isinstance(value, Domain):
        sampler = type(value.get_sampler()).__name__.lstrip("_").lower()
        return {sampler: [plain(value.lower), plain(value.upper)]}
    if isinstance(value, functools.partial):
        return {"partial": plain(value.func), "keywords": plain(value.keywords)}
    if isinstance(value, type) or callable(value):
        return f"<{value.__qualname__}>"
    return f"<{type(value).__qualname__}>"


def resolve(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[dict], dict[str, Any]]:
    """The plans of one YAML (run, dataset, trainable, full param space, built-in data set-up)
    and the default config of each RLlib algorithm it uses."""
    from fttpo_ray.algorithms import rllib_evaluation
    from fttpo_ray.tuning import space
    from fttpo_ray.tuning.schema import load_experiment
    from fttpo_ray.tuning.trainables import trainable_class

    calls: list[dict[str, Any]] = []

    def configure_builtin_offline(config: Any, dataset_id: str, **kwargs: Any) -> Any:
        calls.append({"dataset_id": dataset_id, **kwargs})
        return config

    monkeypatch.setattr(space, "configure_builtin_offline", configure_builtin_offline)
    monkeypatch.setattr(rllib_evaluation, "reference_scores", lambda dataset_id: dataset_id)
    spec = load_experiment(path)
    plans, defaults = [], {}
    for run in spec.runs:
        defaults[run.algorithm] = plain(trainable_class(run.algorithm).get_default_config().to_dict())
        for ds in spec.datasets:
            calls.clear()
            plan = space.plan_run(spec, run, space.dataset_ref(ds))
            plans.append(
                {
                    "run": plan.name,
                    "trainable": run.algorithm,
                    "param_space": plain(plan.param_space),
                    BUILTIN_OFFLINE: plain(calls[0]) if calls else None,
                }
            )
    return plans, defaults
