"""The final evaluation: a larger evaluation at one iteration (the sweep's last), cheaper ones
before it for learning curves (``evaluation.final_episodes``)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from fttpo_ray import metrics as m
from fttpo_ray.algorithms.rllib_evaluation import configure_evaluation, episodes_now
from fttpo_ray.errors import ConfigError
from fttpo_ray.tuning.schema import load_experiment
from tests.helpers import tiny_fttpo_config, tiny_yaml


@pytest.mark.parametrize(
    ("iteration", "expected"),
    [(0, 3), (1, 3), (2, 50), (3, 3)],
)
def test_episodes_now_is_the_final_count_only_in_the_final_iteration(
    iteration: int, expected: int
) -> None:
    """RLlib's ``iteration`` is 0 during the first train() call: the 3rd call is iteration 2."""
    assert episodes_now(SimpleNamespace(iteration=iteration), 3, 50, 3) == expected
    assert episodes_now(SimpleNamespace(iteration=iteration), 3, None, None) == 3


def test_final_episodes_and_iteration_go_together() -> None:
    with pytest.raises(ConfigError, match="go together"):
        configure_evaluation(tiny_fttpo_config(), episodes=2, final_episodes=5)


def test_fttpo_evaluates_on_the_final_episodes_in_the_final_iteration(
    treatment_dataset: object, ray_local: None
) -> None:
    config = configure_evaluation(
        tiny_fttpo_config(), episodes=2, final_episodes=7, final_iteration=2
    )
    algo = config.build_algo()
    try:
        counts = [algo.train()["evaluation"][m.THIN][m.EPISODES] for _ in range(3)]
    finally:
        algo.stop()
    assert counts == [2, 7, 2]


def test_yaml_final_episodes_needs_an_evaluation_at_the_last_iteration(tmp_path: Path) -> None:
    path = tiny_yaml(
        tmp_path / "x.yaml",
        evaluation={"episodes": 1, "interval": 2, "final_episodes": 9},
        stop={"iterations": 3},
    )
    with pytest.raises(ConfigError, match=r"`evaluation.final_episodes` needs .* multiple"):
        load_experiment(path)
    path = tiny_yaml(
        tmp_path / "y.yaml",
        evaluation={"episodes": 1, "interval": 2, "final_episodes": 9},
        stop={"iterations": 4},
    )
    assert load_experiment(path).evaluation.final_episodes == 9
