"""The critic ensemble (stacked weights, one batched matmul per layer) and the model defaults."""

from __future__ import annotations

import math

import torch

from fttpo_ray import FtTPOConfig
from fttpo_ray.rl_module.fttpo_rl_module import DEFAULT_MODEL_CONFIG, CriticEnsemble


def test_each_member_is_the_relu_mlp_of_its_own_weights():
    torch.manual_seed(0)
    ensemble = CriticEnsemble(3, 5, [4, 6])
    x = torch.randn(7, 5)
    out = ensemble(x)
    assert out.shape == (3, 7)
    for e in range(3):
        h = x
        for i, (w, b) in enumerate(zip(ensemble.weights, ensemble.biases, strict=True)):
            h = h @ w[e] + b[e, 0]
            if i < len(ensemble.weights) - 1:
                h = torch.relu(h)
        torch.testing.assert_close(out[e], h.squeeze(-1))


def test_members_are_initialised_independently_like_nn_linear():
    torch.manual_seed(0)
    ensemble = CriticEnsemble(2, 16, [64])
    first = ensemble.weights[0]
    assert first.abs().max() <= 1.0 / math.sqrt(16)
    assert ensemble.weights[1].abs().max() <= 1.0 / math.sqrt(64)
    assert not torch.equal(first[0], first[1])


def test_frozen_pass_sends_gradient_to_the_input_only():
    ensemble = CriticEnsemble(2, 3, [8])
    x = torch.randn(4, 3, requires_grad=True)
    ensemble(x, frozen=True).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None for p in ensemble.parameters())


def test_config_defaults_are_the_modules_defaults():
    """One source: FtTPOConfig's model fields default to DEFAULT_MODEL_CONFIG's values."""
    included = FtTPOConfig()._model_config_auto_includes
    for key, value in DEFAULT_MODEL_CONFIG.items():
        if key in included:
            assert included[key] == value, key
    assert included["num_critics"] == 2
