"""Evaluation with a remote learner (``num_learners=1``): the learner's module lives in a Ray
actor, and ``learner_module`` gives a copy of it built from its spec and loaded with its weights.

Real Ray and RLlib on the treatment dataset (50 random episodes, collected on first use), a few
gradient steps, a few evaluation episodes. Each test stops its algorithm before the next one
starts: a remote learner holds one of the two CPUs of the test Ray instance.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.rl_module.rl_module import RLModule

from fttpo_ray import FtTPOConfig
from fttpo_ray.algorithms.fttpo.evaluation import fttpo_policies
from fttpo_ray.algorithms.learner_module import learner_module
from fttpo_ray.algorithms.rllib_evaluation import rllib_module_policy
from fttpo_ray.data.policies import ALGORITHM_MODULE_SUBDIR
from fttpo_ray.defaults import EVALUATION_SEED
from fttpo_ray.evaluation import evaluate_policies, reference_scores
from fttpo_ray.rl_module.fttpo_rl_module import FtTPOTorchRLModule
from fttpo_ray.tuning.schema import load_experiment
from fttpo_ray.tuning.space import algorithm_config, prepare_dataset
from tests.helpers import run_cli

pytestmark = pytest.mark.slow

DATASET = "fttpo/treatment/random-v0"
ENV = "fttpo/TreatmentSim-v0"
EVAL_EPISODES = 3
CLI_EPISODES = 2
SAFETY_KEYS = (
    "episode_return_mean",
    "violation_rate",
    "violation_rate_ub95",
    "prohibited_mass_mean",
)


def checkpointed_module(checkpoint: Path) -> RLModule:
    """The learner's module as the remote learner itself wrote it into the checkpoint."""
    path = checkpoint / ALGORITHM_MODULE_SUBDIR / DEFAULT_MODULE_ID
    return RLModule.from_checkpoint(str(path))


def assert_same_weights(module: RLModule, expected: RLModule) -> None:
    state, reference = module.state_dict(), expected.state_dict()
    assert state.keys() == reference.keys()
    for key, tensor in reference.items():
        torch.testing.assert_close(state[key], tensor, rtol=0.0, atol=0.0, msg=key)


def fttpo_eval(checkpoint: Path) -> dict[str, dict[str, float]]:
    """``fttpo eval CHECKPOINT --episodes 2``, its JSON output parsed."""
    rc, stdout, _ = run_cli(["eval", str(checkpoint), "--episodes", str(CLI_EPISODES)])
    assert rc == 0
    return json.loads(stdout)


def expected_metrics(policies: list, dataset_id: str | None) -> dict[str, dict[str, float]]:
    """What ``fttpo eval`` must print: the same policies evaluated here, on its episodes."""
    return evaluate_policies(
        policies,
        ENV,
        episodes=CLI_EPISODES,
        seed=EVALUATION_SEED,
        reference_scores=reference_scores(dataset_id),
    )


def test_fttpo_with_a_remote_learner_evaluates_both_policies_and_its_checkpoint(
    ray_local: None, tmp_path: Path
) -> None:
    config = (
        FtTPOConfig()
        .dataset(DATASET)
        .training(num_gradient_steps_per_iteration=5, train_batch_size_per_learner=32)
        .rl_module(model_config={"fcnet_hiddens": [16, 16]})
        .learners(num_learners=1)
        .evaluation(evaluation_duration=EVAL_EPISODES)
        .debugging(seed=0)
    )
    algo = config.build_algo()
    try:
        assert not algo.learner_group.is_local
        result = algo.train()
        module = learner_module(algo)
        checkpoint = Path(algo.save_to_path(str(tmp_path / "fttpo")))
    finally:
        algo.stop()

    for policy in ("thin", "fat"):
        metrics = result["evaluation"][policy]
        assert metrics["episodes"] == EVAL_EPISODES
        for key in SAFETY_KEYS:
            assert np.isfinite(metrics[key]), (policy, key)
    # The copy is the full module (fat scale head included) with the trained weights.
    assert isinstance(module, FtTPOTorchRLModule) and not module.inference_only
    trained = checkpointed_module(checkpoint)
    assert_same_weights(module, trained)

    # `fttpo eval` restores the algorithm with its remote learner and evaluates the same module.
    printed = fttpo_eval(checkpoint)
    expected = expected_metrics(fttpo_policies(trained), DATASET)
    assert set(printed) == {"thin", "fat"}
    for policy, metrics in expected.items():
        assert printed[policy] == pytest.approx(metrics, rel=1e-12, nan_ok=True), policy


def tiny_builtin_experiment(path: Path) -> Path:
    """An experiment YAML with one run of RLlib's BC on a remote learner, two updates."""
    data = {
        "dataset": {"id": DATASET, "env": ENV, "episodes": 50, "seed": 0},
        "evaluation": {"episodes": EVAL_EPISODES, "seed": EVALUATION_SEED, "interval": 1},
        "runs": [
            {
                "name": "bc",
                "algorithm": "BC",
                "config": {
                    "num_learners": 1,
                    "dataset_num_iters_per_learner": 2,
                    "train_batch_size_per_learner": 32,
                    "model_config": {"fcnet_hiddens": [16, 16]},
                },
            }
        ],
        "seeds": [0],
        "stop": {"iterations": 1},
    }
    path.write_text(yaml.safe_dump(data))
    return path


def test_builtin_with_a_remote_learner_evaluates_and_its_checkpoint_too(
    ray_local: None, tmp_path: Path
) -> None:
    spec = load_experiment(tiny_builtin_experiment(tmp_path / "remote_bc.yaml"))
    config = algorithm_config(spec, spec.run("bc"), prepare_dataset(spec), seed=0)
    algo = config.build_algo()
    try:
        assert not algo.learner_group.is_local
        result = algo.train()
        checkpoint = Path(algo.save_to_path(str(tmp_path / "bc")))
    finally:
        algo.stop()

    metrics = result["evaluation"]["fat"]
    assert metrics["episodes"] == EVAL_EPISODES
    for key in SAFETY_KEYS:
        assert np.isfinite(metrics[key]), key

    printed = fttpo_eval(checkpoint)
    expected = expected_metrics([rllib_module_policy(checkpointed_module(checkpoint))], None)
    assert set(printed) == {"fat"}
    assert printed["fat"] == pytest.approx(expected["fat"], rel=1e-12, nan_ok=True)
