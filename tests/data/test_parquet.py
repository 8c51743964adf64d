"""Flat Parquet export for RLlib's offline algorithms; a real one-iteration BC run (slow)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from fttpo_ray.data import (
    DatasetInfo,
    load_transitions,
    rllib_offline_data_kwargs,
    to_parquet,
)
from fttpo_ray.data.parquet import PARQUET_FILE
from tests.data.conftest import LETHAL_ID
from tests.helpers import TREATMENT_ID


def test_parquet_has_rllib_columns_and_all_rows(lethal_dataset: DatasetInfo) -> None:
    path = to_parquet(LETHAL_ID)
    table = pq.read_table(Path(path) / PARQUET_FILE)
    assert table.column_names == [
        "eps_id",
        "t",
        "obs",
        "actions",
        "rewards",
        "new_obs",
        "terminateds",
        "truncateds",
    ]
    transitions = load_transitions(LETHAL_ID)
    assert table.num_rows == len(transitions)
    # Rows are shuffled; sort back by (episode, step) and compare with the transitions.
    order = np.lexsort((table.column("t").to_numpy(), table.column("eps_id").to_numpy()))
    obs = np.stack(table.column("obs").to_numpy(zero_copy_only=False))[order]
    np.testing.assert_array_equal(obs, transitions.obs)
    new_obs = np.stack(table.column("new_obs").to_numpy(zero_copy_only=False))[order]
    np.testing.assert_array_equal(new_obs, transitions.new_obs)
    actions = np.stack(table.column("actions").to_numpy(zero_copy_only=False))[order]
    np.testing.assert_array_equal(actions, transitions.actions)
    np.testing.assert_array_equal(
        table.column("terminateds").to_numpy()[order], transitions.terminateds
    )
    np.testing.assert_array_equal(
        table.column("truncateds").to_numpy()[order], transitions.truncateds
    )
    np.testing.assert_array_equal(table.column("eps_id").to_numpy()[order], transitions.episode_ids)


def test_parquet_export_is_cached(lethal_dataset: DatasetInfo) -> None:
    path = to_parquet(LETHAL_ID)
    written = (Path(path) / PARQUET_FILE).stat().st_mtime_ns
    assert to_parquet(LETHAL_ID) == path
    assert (Path(path) / PARQUET_FILE).stat().st_mtime_ns == written
    assert rllib_offline_data_kwargs(LETHAL_ID)["input_"] == [path]


@pytest.mark.slow
def test_rllib_bc_trains_one_iteration_on_the_export(treatment_dataset: DatasetInfo) -> None:
    """RLlib's BC with the documented settings (~30 s on 2 CPUs: Ray start, Ray Data)."""
    import ray
    from ray.rllib.algorithms.bc import BCConfig

    from fttpo_ray.data import configure_rllib_offline

    config = (
        BCConfig()
        .learners(num_learners=0)
        .env_runners(num_env_runners=0)
        .training(train_batch_size_per_learner=256)
    )
    configure_rllib_offline(config, TREATMENT_ID)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        algo = config.build_algo()
        try:
            result = algo.train()
        finally:
            algo.stop()
    finally:
        ray.shutdown()
    learner = result["learners"]["default_policy"]
    assert np.isfinite(learner["policy_loss"])
    assert result["learners"]["__all_modules__"]["num_env_steps_trained"] >= 256
