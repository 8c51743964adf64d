"""The thin half-width's model-config keys: ``thin_halfwidth_*``, with an older checkpoint's
``thin_scale_*`` keys read under the new names."""

from __future__ import annotations

import gymnasium as gym
import pytest
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from fttpo_ray.algorithms.fttpo.fttpo import FtTPOConfig
from fttpo_ray.rl_module.fttpo_rl_module import (
    DEFAULT_MODEL_CONFIG,
    THIN_HALFWIDTH_BOUNDS,
    THIN_HALFWIDTH_TORSO,
    FtTPOTorchRLModule,
    resolve_model_config,
)


def build(model_config: dict) -> FtTPOTorchRLModule:
    return RLModuleSpec(
        module_class=FtTPOTorchRLModule,
        observation_space=gym.spaces.Box(-1.0, 1.0, (3,)),
        action_space=gym.spaces.Box(-1.0, 1.0, (1,)),
        model_config={"fcnet_hiddens": [8], **model_config},
    ).build()


def test_the_keys_are_named_halfwidth():
    assert (THIN_HALFWIDTH_BOUNDS, THIN_HALFWIDTH_TORSO) == (
        "thin_halfwidth_bounds",
        "thin_halfwidth_torso",
    )
    included = FtTPOConfig()._model_config_auto_includes
    assert included[THIN_HALFWIDTH_BOUNDS] == (1e-3, 1.0)
    assert included[THIN_HALFWIDTH_TORSO] == "shared"
    assert not {"thin_scale_bounds", "thin_scale_torso"} & set(included)


@pytest.mark.parametrize(
    "given",
    [
        {"thin_halfwidth_bounds": (0.01, 0.5), "thin_halfwidth_torso": "own"},
        {"thin_scale_bounds": (0.01, 0.5), "thin_scale_torso": "own"},
    ],
    ids=["current", "old-checkpoint"],
)
def test_the_module_reads_current_and_old_keys(given):
    resolved = resolve_model_config(given)
    assert resolved[THIN_HALFWIDTH_BOUNDS] == (0.01, 0.5)
    assert resolved[THIN_HALFWIDTH_TORSO] == "own"
    assert set(resolved) == set(DEFAULT_MODEL_CONFIG)
    module = build(given)
    assert module.thin_scale_bounds == (0.01, 0.5)
    assert "thin_torso" in dict(module.named_children())


def test_the_current_key_wins_over_an_old_one():
    resolved = resolve_model_config(
        {"thin_scale_bounds": (0.01, 0.5), "thin_halfwidth_bounds": (0.02, 0.25)}
    )
    assert resolved[THIN_HALFWIDTH_BOUNDS] == (0.02, 0.25)
    assert resolve_model_config(None) == DEFAULT_MODEL_CONFIG
