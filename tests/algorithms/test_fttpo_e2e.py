"""End-to-end: FtTPO with real Ray/RLlib/Tune on the treatment dataset (layer: smoke, tiny data).

The dataset (50 random episodes x 24 steps) is collected into the session's temporary Minari
root on first use.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ray import tune
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns

from fttpo_ray import FtTPO
from fttpo_ray.errors import NonFiniteError
from tests.helpers import tiny_fttpo_config

SAFETY_KEYS = (
    "episode_return_mean",
    "episode_return_sem",
    "violation_rate",
    "violations",
    "actions",
    "violation_rate_ub95",
    "prohibited_mass_mean",
    "prohibited_mass_zero_frac",
)


#: The module's FtTPO (``trained``: two iterations of it).
TRAINED_SETTINGS = {
    "fat_q": 2.0,
    "thin_q": 0.0,
    "kl_weight": 0.1,
    "num_gradient_steps_per_iteration": 20,
    "train_batch_size_per_learner": 64,
    "fcnet_hiddens": [32, 32],
    "evaluation_duration": 8,
}
TRAINED_ITERATIONS = 2


def test_train_reports_both_policies_safety_metrics_and_all_losses(trained):
    _, results = trained
    result = results[-1]
    for policy in ("thin", "fat"):
        metrics = result["evaluation"][policy]
        for key in SAFETY_KEYS:
            assert np.isfinite(metrics[key]), (policy, key)
        assert metrics["actions"] == 8 * 24
        assert 0.0 <= metrics["violation_rate"] <= metrics["violation_rate_ub95"] <= 1.0
    thin = result["evaluation"]["thin"]
    assert 0.0 < thin["support_halfwidth_mean"] <= 1.0
    assert thin["support_outside_box_frac"] == 0.0
    for key in ("critic_loss", "value_loss", "fat_loss", "thin_loss", "grad_steps_per_s"):
        assert np.isfinite(result["learner"][key]), key
    assert result["learners"][DEFAULT_MODULE_ID]["grad_steps"] == 40


def test_evaluation_is_reproducible_on_fixed_seeds(trained):
    algo, _ = trained
    first = algo.evaluate()
    second = algo.evaluate()
    assert first["thin"]["episode_return_mean"] == second["thin"]["episode_return_mean"]


def test_checkpoint_round_trip_restores_the_thin_policy_and_continues(trained, tmp_path):
    algo, _ = trained
    path = algo.save_to_path(str(tmp_path / "checkpoint"))
    restored = FtTPO.from_checkpoint(path)
    try:
        obs = torch.randn(16, 8, generator=torch.Generator().manual_seed(3))
        actions = []
        for a in (algo, restored):
            module = a.get_module()
            out = module.forward_inference({Columns.OBS: obs})
            dist = module.get_inference_action_dist_cls().from_logits(
                out[Columns.ACTION_DIST_INPUTS]
            )
            torch.manual_seed(7)
            actions.append(dist.sample())
        torch.testing.assert_close(actions[0], actions[1])
        result = restored.train()
        assert np.isfinite(result["learner"]["thin_loss"])
    finally:
        restored.stop()


@pytest.mark.parametrize("variant", ["rar", "reverse_kl", "fat_only"])
def test_baseline_variants_train_and_report_their_acting_policy(ray_local, variant):
    fat_q = 1.0 if variant == "fat_only" else 2.0
    algo = tiny_fttpo_config(TRAINED_SETTINGS, variant=variant, fat_q=fat_q).build_algo()
    try:
        evaluation = algo.train()["evaluation"]
        acting = "fat" if variant == "fat_only" else "thin"
        assert set(evaluation) >= {acting}
        assert np.isfinite(evaluation[acting]["violation_rate"])
        assert ("fat" in evaluation) == (variant == "fat_only")
    finally:
        algo.stop()


def test_non_finite_loss_stops_training_with_the_step_and_loss_name(ray_local):
    """Only the value net's learning rate is absurd: its first Adam step (about lr per
    parameter) overflows V, so the losses of gradient step 2 are checked, found non-finite and
    named, with ``value_loss`` first. The fat loss reads V through the advantage weights and may
    be named with it; the critic and thin losses do not read V and must not be named."""
    algo = tiny_fttpo_config(TRAINED_SETTINGS, value_lr=1e30).build_algo()
    try:
        with pytest.raises(NonFiniteError) as info:
            algo.train()
        message = str(info.value)
        assert " became non-finite at gradient step 2;" in message, message
        named = message.split(" became non-finite")[0].split(", ")
        assert named[0] == "value_loss", message
        assert set(named) <= {"value_loss", "fat_loss"}, message
    finally:
        algo.stop()


def test_tuner_runs_fttpo_by_name(ray_local, tmp_path):
    config = tiny_fttpo_config(TRAINED_SETTINGS).evaluation(evaluation_duration=4)
    tuner = tune.Tuner(
        "FtTPO",
        param_space=config,
        run_config=tune.RunConfig(
            stop={"training_iteration": 1}, storage_path=str(tmp_path), verbose=0
        ),
    )
    results = tuner.fit()
    assert not results.errors
    result = results[0].metrics
    assert "evaluation" in result and "thin" in result["evaluation"]
