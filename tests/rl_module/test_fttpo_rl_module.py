"""The RLModule (``fttpo_ray/rl_module/fttpo_rl_module.py``) built alone, without Ray: output
shapes, the heads written out by hand from its own layers, what the inference-only module (env
runners) holds, the gradient paths of the thin head, the critics' aggregation and the
observation standardisation."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.core.columns import Columns

from fttpo_ray.rl_module.action_distributions import fat_dist_cls, thin_dist_cls
from fttpo_ray.rl_module.fttpo_rl_module import (
    CRITIC_AGGREGATION,
    CRITIC_KAPPA,
    FAT_Q,
    FAT_SCALE,
    HIDDENS,
    LOC,
    NUM_CRITICS,
    OBS_MEAN,
    OBS_STD,
    THIN_HALFWIDTH,
    THIN_Q,
    VARIANT,
    FtTPOTorchRLModule,
)

OBS_DIM, ACT_DIM, BATCH = 3, 2, 7
#: The module's default fat-scale bounds (docs/algorithm.md §2).
FAT_LOW, FAT_HIGH = 1e-3, 10.0
LEARNER_ONLY = ("critics", "target_critics", "value")


def build(
    *, inference_only: bool = False, act_dim: int = ACT_DIM, seed: int = 0, **model: object
) -> FtTPOTorchRLModule:
    torch.manual_seed(seed)
    return FtTPOTorchRLModule(
        observation_space=gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32),
        action_space=gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32),
        inference_only=inference_only,
        model_config={HIDDENS: [8, 8], **model},
    )


def observations(seed: int = 1) -> torch.Tensor:
    return torch.randn(BATCH, OBS_DIM, generator=torch.Generator().manual_seed(seed))


def test_forward_shapes_and_ranges() -> None:
    module = build()
    obs = observations()
    train = module.forward_train({Columns.OBS: obs})
    assert {k: tuple(train[k].shape) for k in (LOC, FAT_SCALE, THIN_HALFWIDTH)} == {
        LOC: (BATCH, ACT_DIM),
        FAT_SCALE: (BATCH, ACT_DIM),
        THIN_HALFWIDTH: (BATCH, ACT_DIM),
    }
    loc, halfwidth = train[LOC], train[THIN_HALFWIDTH]
    assert bool((loc.abs() < 1).all())
    # The thin support stays in the action box (thin_support_in_box, the default).
    assert bool((halfwidth > 0).all()) and bool((loc.abs() + halfwidth <= 1 + 1e-6).all())
    inputs = module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    torch.testing.assert_close(inputs, torch.cat([loc, halfwidth], dim=-1))
    assert module.state_value(obs).shape == (BATCH,)
    assert module.q_values(obs, loc).shape == (2, BATCH)  # two critics by default


def test_location_and_fat_scale_by_hand_from_the_module_layers() -> None:
    """loc = tanh(W_loc torso(s) + b); fat scale = exp(log lo + (log hi - log lo) sigmoid(.))
    with the default bounds (1e-3, 10)."""
    module = build()
    obs = observations()
    features = module.policy_torso(obs)
    raw = module.fat_scale_head(features)
    expected_scale = torch.exp(
        math.log(FAT_LOW) + (math.log(FAT_HIGH) - math.log(FAT_LOW)) * torch.sigmoid(raw)
    )
    params = module.policy_params(obs)
    torch.testing.assert_close(params.loc, torch.tanh(module.loc_head(features)))
    torch.testing.assert_close(params.fat_scale, expected_scale)


def test_observations_are_standardised_with_the_training_statistics() -> None:
    """A module given obs_mean/obs_std acts on s as the same weights act on (s - mean) / std."""
    mean, std = [1.0, -2.0, 0.5], [2.0, 0.5, 4.0]
    standardising = build(**{OBS_MEAN: mean, OBS_STD: std})
    plain = build()
    plain.load_state_dict(
        {**standardising.state_dict(), "obs_shift": plain.obs_shift, "obs_scale": plain.obs_scale}
    )
    obs = observations()
    scaled = (obs - torch.tensor(mean)) / torch.tensor(std)
    out = standardising.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS]
    expected = plain.forward_inference({Columns.OBS: scaled})[Columns.ACTION_DIST_INPUTS]
    torch.testing.assert_close(out, expected)
    torch.testing.assert_close(standardising.state_value(obs), plain.state_value(scaled))


@pytest.mark.parametrize(
    ("variant", "acting_head"), [("fttpo", None), ("rar", None), ("fat_only", "fat_scale_head")]
)
def test_inference_only_module_holds_the_acting_policy_only(variant, acting_head) -> None:
    """Critics, targets and V never reach an env runner; neither does FtTPO's fat scale head
    (the thin policy acts) — but the fat-only baseline's does (the fat policy acts). The
    learner's inference-only state loads into the runner's module, which acts the same."""
    learner = build(**{VARIANT: variant})
    runner = build(inference_only=True, **{VARIANT: variant})
    for name in LEARNER_ONLY:
        assert hasattr(learner, name) and not hasattr(runner, name), name
    assert set(LEARNER_ONLY) <= set(learner.get_non_inference_attributes())
    if acting_head is not None:
        assert hasattr(runner, acting_head)
        assert acting_head not in learner.get_non_inference_attributes()
    elif variant == "fttpo":
        assert "fat_scale_head" in learner.get_non_inference_attributes()
    state = learner.get_state(inference_only=True)
    assert not any(key.startswith(LEARNER_ONLY) for key in state)
    assert any(key.startswith("fat_scale_head") for key in state) == (variant == "fat_only")
    runner.set_state(state)
    obs = observations()
    torch.testing.assert_close(
        runner.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS],
        learner.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS],
        rtol=0,
        atol=0,
    )


def test_the_acting_distribution_follows_the_variant() -> None:
    fttpo = build(**{THIN_Q: -0.5})
    assert fttpo.get_inference_action_dist_cls() is thin_dist_cls(-0.5)
    assert fttpo.get_exploration_action_dist_cls() is thin_dist_cls(-0.5)
    fat_only = build(**{VARIANT: "fat_only", FAT_Q: 1.5})
    assert fat_only.get_inference_action_dist_cls() is fat_dist_cls(1.5)
    obs = observations()
    params = fat_only.policy_params(obs)
    assert params.thin_halfwidth is None
    torch.testing.assert_close(
        fat_only.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS],
        torch.cat([params.loc, params.fat_scale], dim=-1),
    )


def policy_torso_gradient(module: FtTPOTorchRLModule) -> float:
    module.zero_grad()
    module.policy_params(observations()).thin_halfwidth.sum().backward()
    grads = [p.grad for p in module.policy_torso.parameters()]
    return sum(0.0 if g is None else g.abs().sum().item() for g in grads)


def test_fttpo_thin_head_reads_the_shared_torso_detached() -> None:
    """FtTPO: the thin half-width sends no gradient into the shared torso (nor the location);
    RAR trains the torso through its thin policy."""
    assert policy_torso_gradient(build()) == 0.0
    assert policy_torso_gradient(build(**{VARIANT: "rar"})) > 0.0


def test_critic_aggregation_min_and_mean_minus_kappa_std() -> None:
    obs, actions = observations(), torch.rand(BATCH, ACT_DIM) * 2 - 1
    minimum = build(**{NUM_CRITICS: 3})
    q = minimum.q_values(obs, actions)
    assert q.shape == (3, BATCH)
    torch.testing.assert_close(minimum.q_aggregate(obs, actions), q.amin(dim=0))
    torch.testing.assert_close(minimum.q_min(obs, actions), q.amin(dim=0))
    mean_std = build(**{NUM_CRITICS: 3, CRITIC_AGGREGATION: "mean_std", CRITIC_KAPPA: 0.5})
    q = mean_std.q_values(obs, actions)
    by_hand = q.mean(dim=0) - 0.5 * ((q - q.mean(dim=0)) ** 2).mean(dim=0).sqrt()
    torch.testing.assert_close(mean_std.q_aggregate(obs, actions), by_hand)


def test_target_critics_start_as_frozen_copies() -> None:
    module = build()
    ((online, target),) = module.target_network_pairs()
    assert online is module.critics and target is module.target_critics
    for p, t in zip(online.parameters(), target.parameters(), strict=True):
        assert torch.equal(p, t) and p.requires_grad and not t.requires_grad
    obs, actions = observations(), torch.zeros(BATCH, ACT_DIM)
    torch.testing.assert_close(
        module.q_values(obs, actions, target=True), module.q_values(obs, actions)
    )


def test_bad_spaces_and_statistics_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match=r"continuous \(Box\) action space; got Discrete"):
        FtTPOTorchRLModule(
            observation_space=gym.spaces.Box(-1.0, 1.0, (OBS_DIM,), np.float32),
            action_space=gym.spaces.Discrete(3),
            model_config={HIDDENS: [8]},
        )
    with pytest.raises(ValueError, match="`obs_mean`/`obs_std` must be 3 numbers each"):
        build(**{OBS_MEAN: [0.0, 0.0], OBS_STD: [1.0, 1.0]})
    with pytest.raises(ValueError, match=r"\(std > 0\)"):
        build(**{OBS_MEAN: [0.0] * 3, OBS_STD: [1.0, 0.0, 1.0]})
