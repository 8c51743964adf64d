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
#: What Tune runs (search domains, the seed grid) and what ``fttpo train`` builds (the first
#: seed, a swept key at its ``config`` value).
PARAM_SPACE = "param_space"
TRAIN_CONFIG = "train_config"


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


#: The intended changes of issue 20 (the split belongs to the dataset block, every run of a sweep
#: trains on the same episodes): FtTPO's ``held_out_fraction`` moved from each run's ``config`` to
#: ``dataset.held_out_fraction`` (same value, 0.2, so its param-space value is unchanged), and its
#: split seed, before the trial's ``seed`` (a property, not in the param space), is now the key
#: ``split_seed`` = ``dataset.split_seed`` = 0 for every seed.
FTTPO_MIGRATION = {"split_seed": 0}
#: The built-ins, before trained on every episode, now get the same split as FtTPO.
BUILTIN_MIGRATION = {"held_out_fraction": 0.2, "split_seed": 0}
#: Config keys renamed by issue 20 (one name per concept: "halfwidth"), applied where the new
#: default config has the new name.
RENAMED = {
    "thin_scale_bounds": "thin_halfwidth_bounds",
    "thin_scale_torso": "thin_halfwidth_torso",
}


def resolve(path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[list[dict], dict[str, Any]]:
    """The plans of one YAML (run, trainable, full param space, built-in data set-up) and the
    default config of each algorithm it uses, with the code of this checkout."""
    from fttpo_ray.algorithms import rllib_evaluation
    from fttpo_ray.algorithms.baselines import builtin_offline
    from fttpo_ray.tuning import space
    from fttpo_ray.tuning.schema import load_experiment
    from fttpo_ray.tuning.trainables import trainable_class

    calls: list[dict[str, Any]] = []

    def configure_builtin_offline(config: Any, dataset_id: str, **kwargs: Any) -> Any:
        calls.append({"dataset_id": dataset_id, **kwargs})
        return config

    monkeypatch.setattr(builtin_offline, "configure_builtin_offline", configure_builtin_offline)
    monkeypatch.setattr(rllib_evaluation, "reference_scores", lambda dataset_id: dataset_id)
    spec = load_experiment(path)
    plans, defaults = [], {}
    for run in spec.runs:
        default = trainable_class(run.algorithm).get_default_config().to_dict()
        defaults[run.algorithm] = plain(default)
        for ds in spec.datasets:
            calls.clear()
            ref = space.dataset_ref(ds)
            plan = space.plan_run(spec, run, ref)
            fixed = space.algorithm_config(spec, run, ref, seed=spec.seeds[0])
            plans.append(
                {
                    "run": plan.name,
                    "trainable": run.algorithm,
                    PARAM_SPACE: plain(plan.param_space),
                    TRAIN_CONFIG: plain(fixed.to_dict()),
                    BUILTIN_OFFLINE: plain(calls[0]) if calls else None,
                }
            )
    return plans, defaults


def expected(old: dict, key: str, old_defaults: dict, new_defaults: dict) -> dict:
    """The full config ``key`` (:data:`PARAM_SPACE` or :data:`TRAIN_CONFIG`) of the snapshot's
    plan ``old`` as the new code should resolve it: with the migration of issue 20 applied."""
    config = {k: v for k, v in old_defaults.items() if k not in old["removed"]}
    config.update(old[key])
    config = {RENAMED[k] if RENAMED.get(k) in new_defaults else k: v for k, v in config.items()}
    if old[BUILTIN_OFFLINE] is None:
        config.update(FTTPO_MIGRATION)
    return config


def differences(got: dict, want: dict, defaults: dict) -> tuple[dict, dict]:
    """Keys whose value is not the expected one (expected, got), and keys the old config did
    not have (a field added since) that are not at their default."""
    changed = {k: (want[k], got.get(k)) for k in want if got.get(k, KeyError) != want[k]}
    added = {k: got[k] for k in got.keys() - want.keys() if got[k] != defaults.get(k)}
    return changed, added


SNAPSHOT_DATA = json.loads(SNAPSHOT.read_text(encoding="utf-8"))


#: The YAMLs shipped when the snapshot was taken (later ones, e.g. glucose.yaml, have no "before").
SNAPSHOT_CONFIGS = [REPO / "tune_configs" / name for name in sorted(SNAPSHOT_DATA[PLANS])]


def test_every_yaml_of_the_snapshot_is_still_shipped() -> None:
    assert set(SNAPSHOT_DATA[PLANS]) <= {path.name for path in CONFIGS}


@pytest.mark.parametrize("path", SNAPSHOT_CONFIGS, ids=[p.stem for p in SNAPSHOT_CONFIGS])
def test_shipped_yaml_resolves_to_the_snapshot_trial_configs(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plans, new_defaults = resolve(path, monkeypatch)
    olds = SNAPSHOT_DATA[PLANS][path.name]
    assert [(p["run"], p["trainable"]) for p in plans] == [(p["run"], p["trainable"]) for p in olds]
    for old, new in zip(olds, plans, strict=True):
        defaults = new_defaults[new["trainable"]]
        builtin = old[BUILTIN_OFFLINE] and {**old[BUILTIN_OFFLINE], **BUILTIN_MIGRATION}
        assert new[BUILTIN_OFFLINE] == builtin, new["run"]
        for key in (PARAM_SPACE, TRAIN_CONFIG):
            want = expected(old, key, SNAPSHOT_DATA[DEFAULTS][old["trainable"]], defaults)
            assert differences(new[key], want, defaults) == ({}, {}), (new["run"], key)
