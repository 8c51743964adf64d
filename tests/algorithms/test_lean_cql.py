"""The lean CQL (fttpo_ray.algorithms.baselines.lean_cql) against RLlib's own CQL module and
learner.

Both learners are built from the same ``CQLConfig`` on the same tiny spaces with the same critic
architecture (RLlib's multi-stream critic, or the concatenated critic with RLlib's CQL module
code running on it); the lean module's weights are copied from RLlib's, so both start from
identical weights and see the same batch. Randomness: CQL samples actions (the policy at ``s``
and ``s'``, uniform random actions, ``num_actions`` policy samples per state at ``s`` and
``s'``). The lean module draws from torch's global generator in RLlib's order and with RLlib's
shapes, so reseeding the global generator (``torch.manual_seed(SEED)``) before each learner's
forward pass gives both the same samples; ``test_forward_draws_rllibs_samples`` checks that
directly (a different order or shape would give different actions). Tolerances: 1e-5 relative
(float32 rounding of a different summation order); fused and per-tensor Adam agree to rounding.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.algorithms.cql import CQLConfig
from ray.rllib.algorithms.cql.torch.default_cql_torch_rl_module import DefaultCQLTorchRLModule
from ray.rllib.algorithms.iql import IQLConfig
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from fttpo_ray.algorithms.baselines.builtin_offline import use_lean_learner
from fttpo_ray.algorithms.baselines.lean_cql import (
    LeanConcatCQLTorchRLModule,
    LeanCQLTorchLearner,
    LeanCQLTorchRLModule,
    use_lean_cql,
)
from fttpo_ray.algorithms.baselines.lean_parts import ConcatCriticCatalog, ConcatCriticModule
from fttpo_ray.errors import ConfigError

OBS_DIM, ACT_DIM, BATCH, NUM_ACTIONS = 5, 3, 16, 4
OBS_SPACE = gym.spaces.Box(-1.0, 1.0, (OBS_DIM,), np.float32)
ACT_SPACE = gym.spaces.Box(-1.0, 1.0, (ACT_DIM,), np.float32)
SPACES = {DEFAULT_MODULE_ID: (OBS_SPACE, ACT_SPACE)}
TAU, SEED = 0.1, 3
#: A bc_iters no test reaches: the actor loss clones the data's actions.
BC_FOREVER = 10**9
#: Keys of the module output that RLlib's CQL loss reads.
LOSS_INPUTS = {
    Columns.ACTION_DIST_INPUTS, "logp_resampled", "logp_next_resampled", "q_curr",
    "q_target_next", "qf_preds", "actions_curr_repeat", "q_rand_repeat", "q_curr_repeat",
    "q_next_repeat", "logps_curr_repeat", "logps_next_repeat",
}  # fmt: skip
TWIN_INPUTS = {"qf_twin_preds", "q_twin_rand_repeat", "q_twin_curr_repeat", "q_twin_next_repeat"}


class RLlibCQLConcatCritic(ConcatCriticModule, DefaultCQLTorchRLModule):
    """RLlib's CQL module code (SAC's forward pass and ``_repeat_actions``) on the concatenated
    critic."""


def cql_config(**training: Any) -> CQLConfig:
    settings = {
        "twin_q": True,
        "num_actions": NUM_ACTIONS,
        "initial_alpha": 0.5,
        "tau": TAU,
        "gamma": 0.9,
        "bc_iters": 0,
        "train_batch_size_per_learner": BATCH,
        **training,
    }
    return (
        CQLConfig()
        .environment(observation_space=OBS_SPACE, action_space=ACT_SPACE)
        .training(**settings)
        .rl_module(model_config={"fcnet_hiddens": [16, 16], "fusionnet_hiddens": [12, 12]})
    )


def learners(concat_critic: bool, **training: Any) -> tuple:
    """RLlib's learner and the lean one (same architecture), lean weights set to RLlib's."""
    if concat_critic:
        spec = RLModuleSpec(module_class=RLlibCQLConcatCritic, catalog_class=ConcatCriticCatalog)
    else:
        spec = RLModuleSpec(module_class=DefaultCQLTorchRLModule)
    rllib = cql_config(**training).rl_module(rl_module_spec=spec).build_learner(spaces=SPACES)
    config = use_lean_cql(cql_config(**training), concat_critic=concat_critic)
    lean = config.build_learner(spaces=SPACES)
    assert isinstance(lean, LeanCQLTorchLearner)
    module_class = LeanConcatCQLTorchRLModule if concat_critic else LeanCQLTorchRLModule
    assert type(lean.module[DEFAULT_MODULE_ID]) is module_class
    lean.module[DEFAULT_MODULE_ID].load_state_dict(rllib.module[DEFAULT_MODULE_ID].state_dict())
    assert torch.equal(
        lean.curr_log_alpha[DEFAULT_MODULE_ID], rllib.curr_log_alpha[DEFAULT_MODULE_ID]
    )
    return rllib, lean


def batch() -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        DEFAULT_MODULE_ID: {
            Columns.OBS: torch.rand(BATCH, OBS_DIM, generator=g) * 2 - 1,
            Columns.ACTIONS: torch.rand(BATCH, ACT_DIM, generator=g) * 1.8 - 0.9,
            Columns.REWARDS: torch.randn(BATCH, generator=g),
            Columns.NEXT_OBS: torch.rand(BATCH, OBS_DIM, generator=g) * 2 - 1,
            Columns.TERMINATEDS: torch.arange(BATCH) % 4 == 0,
        }
    }


def named(learner, tensors: dict) -> dict[str, torch.Tensor]:
    """``tensors`` (keyed by RLlib's parameter refs) keyed by parameter name."""
    names = {p: n for n, p in learner.module[DEFAULT_MODULE_ID].named_parameters()}
    names[learner.curr_log_alpha[DEFAULT_MODULE_ID]] = "log_alpha"
    return {names[pid]: value for pid, value in tensors.items()}


def assert_close_scaled(actual: torch.Tensor, expected: torch.Tensor, name: str) -> None:
    """Elementwise within 1e-5 relative, plus 1e-5 of the tensor's largest entry."""
    atol = 1e-5 * float(expected.abs().max()) + 1e-9
    torch.testing.assert_close(actual, expected, rtol=1e-5, atol=atol, msg=name)


@pytest.mark.parametrize("concat_critic", [False, True])
@pytest.mark.parametrize("twin_q", [True, False])
def test_forward_draws_rllibs_samples(concat_critic: bool, twin_q: bool) -> None:
    rllib, lean = learners(concat_critic, twin_q=twin_q)
    data = batch()
    out = {}
    for name, learner in (("rllib", rllib), ("lean", lean)):
        torch.manual_seed(SEED)
        out[name] = learner.module[DEFAULT_MODULE_ID].forward_train(data[DEFAULT_MODULE_ID])
    needed = LOSS_INPUTS | (TWIN_INPUTS if twin_q else set())
    assert needed <= set(out["lean"])
    for key in sorted(set(out["rllib"]) & set(out["lean"])):
        assert out["lean"][key].shape == out["rllib"][key].shape, key
        assert_close_scaled(out["lean"][key].detach(), out["rllib"][key].detach(), key)
    # The repeated samples differ across states and repeats (a broadcast would pass the shapes).
    assert out["lean"]["actions_curr_repeat"].unique(dim=0).shape[0] == BATCH * NUM_ACTIONS


CASES = [
    # concat_critic, RLlib's training settings
    (False, {"bc_iters": BC_FOREVER}),  # RLlib's defaults otherwise
    (False, {"bc_iters": 0, "twin_q": False, "deterministic_backup": False, "lagrangian": True}),
    (False, {"temperature": 0.5, "min_q_weight": 2.0, "deterministic_backup": False}),
    (True, {}),
    (True, {"twin_q": False, "lagrangian": True, "bc_iters": BC_FOREVER}),
]


@pytest.mark.parametrize(("concat_critic", "training"), CASES)
def test_losses_and_gradients_equal_rllibs(concat_critic: bool, training: dict) -> None:
    """Every optimizer's loss and gradient (RLlib: one backward pass per optimizer; lean: one
    backward pass of their sum). RLlib 2.60's CQL learner reads no ``lagrangian`` setting, so
    ``lagrangian=True`` must change nothing either."""
    rllib, lean = learners(concat_critic, **training)
    data = batch()
    losses, grads = {}, {}
    for name, learner in (("rllib", rllib), ("lean", lean)):
        torch.manual_seed(SEED)
        fwd = learner.module.forward_train(data)
        total = learner.compute_losses(fwd_out=fwd, batch=data)[DEFAULT_MODULE_ID]
        losses[name] = {key[1]: loss.detach() for key, loss in learner._temp_losses.items()}
        losses[name]["total"] = total.detach()
        grads[name] = {
            n: g.clone()
            for n, g in named(
                learner, learner.compute_gradients({DEFAULT_MODULE_ID: total})
            ).items()
        }
    expected_losses = {"qf_loss", "policy_loss", "alpha_loss", "total"}
    if training.get("twin_q", True):
        expected_losses.add("qf_twin_loss")
    assert set(losses["rllib"]) == set(losses["lean"]) == expected_losses
    for key, value in losses["rllib"].items():
        assert_close_scaled(losses["lean"][key], value, key)
    trained = {
        n
        for n, _ in rllib.module[DEFAULT_MODULE_ID].named_parameters()
        if not n.startswith("target_")
    }
    assert set(grads["rllib"]) == set(grads["lean"]) == trained | {"log_alpha"}
    for name, expected in grads["rllib"].items():
        assert expected.abs().sum() > 0, name
        assert_close_scaled(grads["lean"][name], expected, name)


def parameters(learner, prefix: str = "") -> dict[str, torch.Tensor]:
    module = learner.module[DEFAULT_MODULE_ID]
    return {n: p.detach().clone() for n, p in module.named_parameters() if n.startswith(prefix)}


@pytest.mark.parametrize("concat_critic", [False, True])
def test_one_step_equals_rllibs_and_moves_targets_every_step(concat_critic: bool) -> None:
    """A whole gradient step (RLlib's ``_update``: forward, loss, gradients, Adam). Adam's first
    step is about ``lr * sign(grad)``; parameters agree within 1e-5 + 1e-5 relative, one hundredth
    of a step at the critics' ``lr = 1e-3`` (a gradient error flips signs: about ``2 lr``)."""
    rllib, lean = learners(concat_critic)
    data = batch()
    before = parameters(rllib)
    for learner in (rllib, lean):
        torch.manual_seed(SEED)
        learner._update(data)
    after_rllib, after_lean = parameters(rllib), parameters(lean)
    online = [n for n in before if not n.startswith("target_")]
    for name in online:
        assert not torch.equal(after_rllib[name], before[name]), name
        torch.testing.assert_close(after_lean[name], after_rllib[name], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        lean.curr_log_alpha[DEFAULT_MODULE_ID], rllib.curr_log_alpha[DEFAULT_MODULE_ID]
    )
    # RLlib moves the targets once per update() call (after_gradient_based_update, not run by
    # _update); the lean learner after every step: target <- (1 - tau) target + tau online.
    for name in before:
        if name.startswith("target_"):
            assert torch.equal(after_rllib[name], before[name]), name
            expected = (1 - TAU) * before[name] + TAU * after_lean[name.removeprefix("target_")]
            torch.testing.assert_close(after_lean[name], expected, rtol=1e-6, atol=1e-7)


def test_optimizers_are_rllibs_fused() -> None:
    rllib, lean = learners(False, critic_lr=3e-4, actor_lr=1e-4, alpha_lr=2e-3)
    expected_lr = {"qf": 3e-4, "qf_twin": 3e-4, "policy": 1e-4, "alpha": 2e-3}
    ours = dict(lean.get_optimizers_for_module(DEFAULT_MODULE_ID))
    theirs = dict(rllib.get_optimizers_for_module(DEFAULT_MODULE_ID))
    assert ours.keys() == theirs.keys() == expected_lr.keys()
    for name, optimizer in ours.items():
        (group,) = optimizer.param_groups
        assert group["fused"] is True and not theirs[name].param_groups[0]["fused"]
        assert group["eps"] == theirs[name].param_groups[0]["eps"] == 1e-7
        assert group["lr"] == pytest.approx(expected_lr[name])
        mine = named(lean, {p: p for p in group["params"]})
        rllibs = named(rllib, {p: p for p in theirs[name].param_groups[0]["params"]})
        assert set(mine) == set(rllibs), name


def test_use_lean_cql_rejects_other_configs_and_discrete_actions() -> None:
    assert use_lean_learner(cql_config()).learner_class is LeanCQLTorchLearner
    with pytest.raises(ConfigError, match="use_lean_cql needs a CQLConfig; got IQLConfig"):
        use_lean_cql(IQLConfig())
    with pytest.raises(ConfigError, match=r"continuous \(Box\) action space; got Discrete\(3\)"):
        use_lean_cql(CQLConfig().environment(action_space=gym.spaces.Discrete(3)))
    # Spaces given only when the learner is built: the module refuses them.
    with pytest.raises(ConfigError, match=r"continuous \(Box\) action space; got Discrete\(3\)"):
        use_lean_cql(CQLConfig(), concat_critic=False).build_learner(
            spaces={DEFAULT_MODULE_ID: (OBS_SPACE, gym.spaces.Discrete(3))}
        )
