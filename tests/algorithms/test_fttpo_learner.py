"""FtTPO's RLModule and loss assembly on a bare module (layer: exact maths, no Ray runtime)."""

from __future__ import annotations

import types

import gymnasium as gym
import pytest
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from fttpo_ray.algorithms.fttpo.fttpo_learner import THIN
from fttpo_ray.algorithms.fttpo.torch.fttpo_torch_learner import fttpo_losses
from fttpo_ray.distributions import SparseQGaussian
from fttpo_ray.rl_module.fttpo_rl_module import FtTPOTorchRLModule

OBS_SPACE = gym.spaces.Box(-10.0, 10.0, (8,))
ACT_SPACE = gym.spaces.Box(-1.0, 1.0, (2,))
CONFIG = types.SimpleNamespace(
    gamma=0.9,
    kl_weight=0.1,
    weight_q=0.0,
    w_max=1e4,
    kl_num_samples=4,
    kl_ratio_clip=1e4,
    rar_num_samples=100,
)


def build(variant: str, inference_only: bool = False, **model_config) -> FtTPOTorchRLModule:
    torch.manual_seed(0)
    return RLModuleSpec(
        module_class=FtTPOTorchRLModule,
        observation_space=OBS_SPACE,
        action_space=ACT_SPACE,
        inference_only=inference_only,
        model_config={"variant": variant, "fcnet_hiddens": [32, 32], **model_config},
    ).build()


def make_batch(n: int = 64, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {
        Columns.OBS: torch.randn(n, 8, generator=g),
        Columns.ACTIONS: torch.rand(n, 2, generator=g) * 2 - 1,
        Columns.REWARDS: torch.randn(n, generator=g),
        Columns.NEXT_OBS: torch.randn(n, 8, generator=g),
        Columns.TERMINATEDS: torch.rand(n, generator=g) < 0.1,
    }


def losses_of(module, batch, seed=2):
    torch.manual_seed(seed)
    return fttpo_losses(module, batch, module.forward_train(batch), CONFIG)


def grads(module, loss) -> dict[str, torch.Tensor | None]:
    module.zero_grad(set_to_none=True)
    loss.backward(retain_graph=True)
    return {name: p.grad for name, p in module.named_parameters()}


@pytest.mark.parametrize(
    ("variant", "acting_head", "absent"),
    [
        ("fttpo", "thin_scale_head", {"fat_scale_head", "critics", "value", "target_critics"}),
        ("rar", "thin_scale_head", {"fat_scale_head", "critics", "value"}),
        ("reverse_kl", "thin_scale_head", {"fat_scale_head", "critics", "value"}),
        ("fat_only", "fat_scale_head", {"thin_scale_head", "critics", "value"}),
    ],
)
def test_inference_only_module_holds_the_acting_policy_only(variant, acting_head, absent):
    module = build(variant, inference_only=True)
    children = {name for name, _ in module.named_children()}
    assert {"policy_torso", "loc_head", acting_head} <= children
    assert not absent & children
    out = module.forward_inference({Columns.OBS: torch.randn(5, 8)})
    inputs = out[Columns.ACTION_DIST_INPUTS]
    assert inputs.shape == (5, 4)  # [loc, scale] for 2 action dimensions
    dist = module.get_inference_action_dist_cls().from_logits(inputs)
    actions = dist.sample()
    assert actions.shape == (5, 2)
    torch.testing.assert_close(dist.to_deterministic().sample(), inputs[:, :2])


def test_thin_support_stays_inside_the_action_box():
    module = build("fttpo")
    with torch.no_grad():
        params = module.policy_params(torch.randn(1000, 8) * 5)
    assert (params.loc.abs() < 1).all()
    low, _ = module.thin_scale_bounds
    inside = (params.loc.abs() + params.thin_halfwidth <= 1.0 + 1e-6) | (
        params.thin_halfwidth <= low
    )
    assert inside.all()


def test_fttpo_thin_loss_never_evaluates_the_thin_density_at_dataset_actions(monkeypatch):
    seen: list[torch.Tensor] = []
    original = SparseQGaussian.log_prob

    def recording_log_prob(self, value):
        seen.append(value.detach().clone())
        return original(self, value)

    monkeypatch.setattr(SparseQGaussian, "log_prob", recording_log_prob)
    batch = make_batch()
    losses_of(build("fttpo"), batch)
    assert seen, "the thin loss must evaluate the thin density (at its own samples)"
    for value in seen:
        flat = value.reshape(-1, 2)
        # no evaluated point coincides with a dataset action
        distances = torch.cdist(flat, batch[Columns.ACTIONS])
        assert distances.min() > 0.0


def test_fttpo_thin_loss_reaches_only_the_thin_head():
    module = build("fttpo")
    named, _ = losses_of(module, make_batch())
    g = grads(module, named[THIN])
    thin_params = {n for n in g if n.startswith("thin_scale_head")}
    assert all(g[n] is not None and g[n].abs().sum() > 0 for n in thin_params)
    others = {n: v for n, v in g.items() if n not in thin_params}
    assert all(v is None or v.abs().sum() == 0 for v in others.values()), [
        n for n, v in others.items() if v is not None and v.abs().sum() > 0
    ]


def test_reverse_kl_gradient_reaches_the_thin_policy_through_q_not_the_critics():
    module = build("reverse_kl")
    batch = make_batch()
    named, _ = losses_of(module, batch)
    g = grads(module, named[THIN])
    assert g["loc_head.weight"] is not None and g["loc_head.weight"].abs().sum() > 0
    assert all(g[n] is None for n in g if n.startswith(("critics.", "value.")))
    # the Q term moves the location: scaling Q's last layer changes the location gradient
    with torch.no_grad():
        module.critics.weights[-1].mul_(5.0)
    named_scaled, _ = losses_of(module, batch)
    g_scaled = grads(module, named_scaled[THIN])
    assert not torch.allclose(g["loc_head.weight"], g_scaled["loc_head.weight"])


def test_rar_replaces_out_of_support_dataset_actions():
    module = build("rar", thin_scale_bounds=(1e-3, 0.05))
    batch = make_batch()
    named, metrics = losses_of(module, batch)
    # half-widths <= 0.05 around loc: a uniform dataset action lies inside with probability
    # about pi 0.05^2 / 4 = 0.2 %, and none of the 64 seeded ones does
    assert metrics["rar_replaced_frac"] == 1.0
    assert torch.isfinite(named[THIN])


def test_all_variants_give_finite_losses():
    for variant in ("fttpo", "rar", "reverse_kl", "fat_only"):
        named, _ = losses_of(build(variant), make_batch())
        assert all(torch.isfinite(v) for v in named.values()), variant
