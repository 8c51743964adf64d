"""The lean IQL (fttpo_ray.algorithms.baselines.lean_iql) against RLlib's own IQL module and
learner.

Both learners are built from the same ``IQLConfig`` on the same tiny spaces with the same
networks and policy distribution (the IQL paper's: concatenated critic, tanh-mean Gaussian);
the lean learner's parameters are copied from RLlib's, so both start from identical weights and
see the same batch. IQL's loss reads no sampled action, so no random numbers enter the
comparison. Tolerances: 1e-5 relative (float32 rounding of a different summation order); fused
and per-tensor Adam agree to rounding.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.algorithms.iql import IQLConfig
from ray.rllib.algorithms.iql.torch.default_iql_torch_rl_module import DefaultIQLTorchRLModule
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from fttpo_ray.algorithms.baselines.builtin_offline import use_lean_learner
from fttpo_ray.algorithms.baselines.lean_iql import (
    IQLPaperCatalog,
    LeanIQLTorchLearner,
    LeanIQLTorchRLModule,
    TanhMeanGaussian,
    use_lean_iql,
)
from fttpo_ray.algorithms.baselines.lean_parts import ConcatCriticModule
from fttpo_ray.errors import ConfigError

OBS_DIM, ACT_DIM, BATCH = 5, 2, 32
TAU = 0.1


class RLlibIQLConcatCritic(ConcatCriticModule, DefaultIQLTorchRLModule):
    """RLlib's IQL module (SAC's whole forward pass) on the paper's critic and policy."""


def iql_config(twin_q: bool) -> IQLConfig:
    return (
        IQLConfig()
        .environment(
            observation_space=gym.spaces.Box(-1.0, 1.0, (OBS_DIM,), np.float32),
            action_space=gym.spaces.Box(-1.0, 1.0, (ACT_DIM,), np.float32),
        )
        .training(beta=0.7, expectile=0.7, twin_q=twin_q, tau=TAU, gamma=0.9)
        .rl_module(model_config={"fcnet_hiddens": [16, 16], "fcnet_activation": "relu"})
    )


def learners(twin_q: bool) -> tuple:
    """RLlib's learner (RLlib's module on the concatenated critic) and the lean one, with the
    lean learner's weights (online and target) set to RLlib's."""
    rllib = (
        iql_config(twin_q)
        .rl_module(
            rl_module_spec=RLModuleSpec(
                module_class=RLlibIQLConcatCritic, catalog_class=IQLPaperCatalog
            )
        )
        .build_learner()
    )
    lean = use_lean_iql(iql_config(twin_q)).build_learner()
    assert isinstance(lean, LeanIQLTorchLearner)
    assert isinstance(lean.module[DEFAULT_MODULE_ID], LeanIQLTorchRLModule)
    lean.module[DEFAULT_MODULE_ID].load_state_dict(rllib.module[DEFAULT_MODULE_ID].state_dict())
    return rllib, lean


def batch() -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        DEFAULT_MODULE_ID: {
            Columns.OBS: torch.rand(BATCH, OBS_DIM, generator=g) * 2 - 1,
            Columns.ACTIONS: torch.rand(BATCH, ACT_DIM, generator=g) * 2 - 1,
            Columns.REWARDS: torch.randn(BATCH, generator=g),
            Columns.NEXT_OBS: torch.rand(BATCH, OBS_DIM, generator=g) * 2 - 1,
            Columns.TERMINATEDS: torch.rand(BATCH, generator=g) < 0.2,
        }
    }


def parameters(learner, prefix: str = "") -> dict[str, torch.Tensor]:
    module = learner.module[DEFAULT_MODULE_ID]
    return {n: p.detach().clone() for n, p in module.named_parameters() if n.startswith(prefix)}


@pytest.mark.parametrize("twin_q", [True, False])
def test_losses_and_gradients_equal_rllibs(twin_q: bool) -> None:
    rllib, lean = learners(twin_q)
    data = batch()
    losses, grads = {}, {}
    for name, learner in (("rllib", rllib), ("lean", lean)):
        fwd = learner.module.forward_train(data)
        loss = learner.compute_losses(fwd_out=fwd, batch=data)
        losses[name] = loss[DEFAULT_MODULE_ID].detach()
        learner.compute_gradients(loss)
        module = learner.module[DEFAULT_MODULE_ID]
        grads[name] = {n: p.grad for n, p in module.named_parameters() if p.grad is not None}
    torch.testing.assert_close(losses["lean"], losses["rllib"], rtol=1e-5, atol=1e-6)
    # RLlib's learner leaves gradients on the target critics (its value loss backpropagates
    # into them; they are in no optimizer); the lean one computes targets without gradient.
    trained = {n for n in grads["rllib"] if not n.startswith("target_")}
    assert set(grads["lean"]) == trained
    expected_parts = {"pi", "qf", "vf"} | ({"qf_twin"} if twin_q else set())
    assert {n.split(".")[0].removesuffix("_encoder") for n in trained} == expected_parts
    for name in trained:
        assert grads["lean"][name].abs().sum() > 0, name
        torch.testing.assert_close(grads["lean"][name], grads["rllib"][name], rtol=1e-5, atol=1e-7)


def test_one_step_equals_rllibs_and_moves_targets_every_step() -> None:
    rllib, lean = learners(twin_q=True)
    data = batch()
    targets_before = parameters(lean, "target_")
    rllib._update(data)
    lean._update(data)
    online_rllib = {n: p for n, p in parameters(rllib).items() if not n.startswith("target_")}
    online_lean = {n: p for n, p in parameters(lean).items() if not n.startswith("target_")}
    assert online_lean.keys() == online_rllib.keys()
    for name in online_rllib:
        torch.testing.assert_close(online_lean[name], online_rllib[name], rtol=1e-5, atol=1e-6)
    # RLlib's learner moves targets only in after_gradient_based_update (once per update()
    # call); the lean learner after every step: target <- (1 - tau) target + tau online.
    assert all(torch.equal(p, targets_before[n]) for n, p in parameters(rllib, "target_").items())
    for name, target in parameters(lean, "target_").items():
        online = online_lean[name.removeprefix("target_")]
        expected = (1 - TAU) * targets_before[name] + TAU * online
        torch.testing.assert_close(target, expected, rtol=1e-6, atol=1e-7)
        assert not torch.equal(target, targets_before[name])


def test_concatenated_critic_is_an_mlp_of_observation_and_action() -> None:
    module = use_lean_iql(iql_config(True)).build_learner().module[DEFAULT_MODULE_ID]
    data = batch()[DEFAULT_MODULE_ID]
    layers = [m for m in module.qf_encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert [layer.in_features for layer in layers] == [OBS_DIM + ACT_DIM, 16]
    h = torch.cat([data[Columns.OBS], data[Columns.ACTIONS]], dim=-1)
    for layer in layers:
        h = torch.relu(layer(h))
    by_hand = module.qf.net.mlp[0](h).squeeze(-1)
    torch.testing.assert_close(
        module.compute_q_values(data),
        torch.min(
            by_hand, module._qf_forward_train_helper(data, module.qf_twin_encoder, module.qf_twin)
        ),
    )
    fwd = module.forward_train(data)
    torch.testing.assert_close(fwd["qf_preds"], by_hand)


def test_use_lean_learner_switches_iql_only_and_rejects_other_configs() -> None:
    from ray.rllib.algorithms.bc import BCConfig

    config = use_lean_learner(iql_config(True))
    assert config.learner_class is LeanIQLTorchLearner
    bc = BCConfig()
    rllibs = bc.learner_class
    assert use_lean_learner(bc) is bc and bc.learner_class is rllibs
    with pytest.raises(ConfigError, match="use_lean_iql needs an IQLConfig; got BCConfig"):
        use_lean_iql(BCConfig())


def test_deterministic_evaluation_action_of_squashed_gaussian_is_the_squashed_mean() -> None:
    """RLlib's own IQL (SAC) policy is a tanh-squashed Gaussian; its deterministic action must
    lie in the action box: tanh of the Gaussian mean, not the raw mean RLlib's
    to_deterministic gives."""
    from fttpo_ray.algorithms.rllib_evaluation import rllib_module_policy

    module = iql_config(True).build_learner().module[DEFAULT_MODULE_ID]
    assert type(module) is DefaultIQLTorchRLModule
    with torch.no_grad():
        module.pi.net.mlp[0].bias[:ACT_DIM] = 3.0  # pre-squash mean ~3 in every dimension
        obs = torch.zeros(4, OBS_DIM)
        policy = rllib_module_policy(module)
        dist = policy.distribution(obs)
        action = policy.deterministic(dist)
        loc = module.forward_inference({Columns.OBS: obs})[Columns.ACTION_DIST_INPUTS][:, :ACT_DIM]
    assert loc.min() > 1.5  # the raw mean is outside [-1, 1] ...
    torch.testing.assert_close(action, torch.tanh(loc))  # ... the action is its tanh
    samples = torch.stack([dist.sample() for _ in range(200)])
    assert samples.abs().max() <= 1.0


def test_lean_policy_is_the_papers_tanh_mean_gaussian() -> None:
    """The likelihood of a logged action at the bound is the Gaussian's at tanh(loc), finite and
    moderate, where the squashed Gaussian evaluates atanh(1 - 1e-6) = 7.25."""
    module = use_lean_iql(iql_config(True)).build_learner().module[DEFAULT_MODULE_ID]
    assert module.get_train_action_dist_cls() is TanhMeanGaussian
    assert module.get_inference_action_dist_cls() is TanhMeanGaussian
    logits = torch.tensor([[0.5, -2.0, 0.0, -9.0]])  # loc (2), log-std (2; -9 clamps to -5)
    dist = TanhMeanGaussian.from_logits(logits)
    actions = torch.tensor([[1.0, -1.0]])
    mean = torch.tanh(torch.tensor([0.5, -2.0]))
    std = torch.tensor([1.0, float(np.exp(-5.0))])
    by_hand = -0.5 * ((actions - mean) / std) ** 2 - torch.log(std) - 0.5 * np.log(2 * np.pi)
    torch.testing.assert_close(dist.logp(actions), by_hand.sum(-1))
    torch.testing.assert_close(dist.to_deterministic().sample(), mean.unsqueeze(0))
