"""Tune's actor reuse for FtTPO (``FtTPO.reset_config``): an algorithm reset to another trial's
config trains exactly as one built fresh from that config, and nothing of the previous trial
(weights, held-out selection, counters) survives the reset."""

from __future__ import annotations

import torch

from fttpo_ray.algorithms.fttpo.selection import SELECTED, SELECTED_ITERATION
from fttpo_ray.algorithms.learner_module import learner_module
from tests.helpers import tiny_fttpo_config

FIRST = {"num_gradient_steps_per_iteration": 6, "kl_weight": 0.1, "seed": 0}
SECOND = {"num_gradient_steps_per_iteration": 4, "kl_weight": 1.0, "fat_q": 1.5, "seed": 7}


def weights(algo) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in learner_module(algo).state_dict().items()}


def test_a_reset_algorithm_trains_as_a_fresh_one_of_the_new_config(ray_local):
    """Two iterations of SECOND after a reset from FIRST (itself trained three iterations, with
    a held-out selection of its own) equal, weight for weight and result for result (the
    selection included), two iterations of SECOND built fresh; the counters start again."""
    fresh = tiny_fttpo_config(SECOND).build_algo()
    try:
        expected = [fresh.train() for _ in range(2)]
        expected_weights = weights(fresh)
    finally:
        fresh.stop()

    algo = tiny_fttpo_config(FIRST).build_algo()
    try:
        for _ in range(3):
            first_result = algo.train()
        assert first_result[SELECTED][SELECTED_ITERATION] >= 1
        before = weights(algo)
        assert algo.reset_config(tiny_fttpo_config(SECOND).to_dict()) is True
        assert algo.iteration == 0
        assert algo.config.kl_weight == 1.0 and algo.config.fat_q == 1.5
        got = [algo.train() for _ in range(2)]
        got_weights = weights(algo)
    finally:
        algo.stop()

    assert got_weights.keys() == expected_weights.keys()
    for name, value in expected_weights.items():
        torch.testing.assert_close(got_weights[name], value, rtol=0, atol=0, msg=name)
    assert any(not torch.equal(before[k], got_weights[k]) for k in before if k in got_weights)
    for mine, theirs in zip(got, expected, strict=True):
        assert mine["training_iteration"] == theirs["training_iteration"]
        assert mine[SELECTED] == theirs[SELECTED]
        for key, value in theirs["learner"].items():
            assert mine["learner"][key] == value or key == "grad_steps_per_s", key
    assert got[0][SELECTED][SELECTED_ITERATION] == 1
