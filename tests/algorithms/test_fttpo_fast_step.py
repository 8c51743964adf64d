"""The optimised gradient step (fused Adam, critic ensemble, no host reads, optional compilation)
against the plain reference step of ``reference_step.py``, on the real learner without Ray."""

from __future__ import annotations

import copy
import functools

import gymnasium as gym
import pytest
import torch
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.multi_rl_module import MultiRLModuleSpec
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch

from fttpo_ray import FtTPOConfig
from fttpo_ray.algorithms.fttpo.fttpo_learner import CRITIC, FAT, LOSS_KEYS, THIN, VALUE
from fttpo_ray.algorithms.fttpo.torch.fttpo_torch_learner import (
    DYNAMO_CONFIG,
    FLOAT_COLUMNS,
    GRADIENT_CHECK,
    INDUCTOR_OPTIONS,
    StepHyperParameters,
    compile_step,
    losses_and_gradients,
    non_finite_message,
    polyak_update,
)
from fttpo_ray.errors import ConfigError
from fttpo_ray.rl_module.fttpo_rl_module import FtTPOTorchRLModule
from fttpo_ray.rl_module.variants import VARIANTS
from tests.algorithms.reference_step import ReferenceStep, stacked
from tests.algorithms.test_fttpo_learner import make_batch

OBS_SPACE = gym.spaces.Box(-10.0, 10.0, (8,))
ACT_SPACE = gym.spaces.Box(-1.0, 1.0, (2,))
HIDDENS = [32, 32]
MINIBATCH = 64
STEPS = 3


def make_config(variant: str, **training) -> FtTPOConfig:
    # Large learning rates, so that three steps move every parameter far beyond the tolerance.
    training = {"fat_q": 1.0 if variant == "fat_only" else 2.0, **training}
    return FtTPOConfig().training(
        variant=variant,
        kl_num_samples=4,
        actor_lr=1e-2,
        critic_lr=1e-2,
        value_lr=1e-2,
        polyak=0.1,
        gamma=0.9,
        **training,
    )


def make_learner(config: FtTPOConfig, seed: int = 0):
    spec = RLModuleSpec(
        module_class=FtTPOTorchRLModule,
        observation_space=OBS_SPACE,
        action_space=ACT_SPACE,
        model_config={"fcnet_hiddens": HIDDENS, **config._model_config_auto_includes},
    )
    torch.manual_seed(seed)
    learner = config.get_default_learner_class()(
        config=config, module_spec=MultiRLModuleSpec(rl_module_specs={DEFAULT_MODULE_ID: spec})
    )
    learner.build()
    return learner


def optimizer_params(learner) -> list[torch.nn.Parameter]:
    return [
        p
        for _, opt in learner.get_optimizers_for_module(DEFAULT_MODULE_ID)
        for p in learner._optimizer_parameters[opt]
    ]


def learner_update(learner, batch: dict[str, torch.Tensor], minibatch: int) -> dict:
    n = len(batch[Columns.OBS])
    samples = SampleBatch({k: v.numpy() for k, v in batch.items()})
    result = learner.update(
        batch=MultiAgentBatch({DEFAULT_MODULE_ID: samples}, env_steps=n),
        minibatch_size=minibatch,
        num_epochs=1,
    )
    return {k: v.peek() for k, v in result[DEFAULT_MODULE_ID].items()}


def assert_same_parameters(
    module: FtTPOTorchRLModule, reference: ReferenceStep, rtol: float, atol: float
) -> None:
    """Every parameter of the learner's module equals the reference's (critics re-stacked)."""
    ref_module = reference.module
    for name, param in module.named_parameters():
        if name.startswith(("critics.", "target_critics.")):
            continue
        torch.testing.assert_close(
            param, dict(ref_module.named_parameters())[name], rtol=rtol, atol=atol, msg=name
        )
    for ensemble, nets in (
        (module.critics, reference.critics),
        (module.target_critics, reference.target_critics),
    ):
        for mine, theirs in zip(ensemble.parameters(), stacked(nets), strict=True):
            torch.testing.assert_close(mine, theirs, rtol=rtol, atol=atol)


def assert_means_equal_reference_steps(
    logged: dict, reference: ReferenceStep, batch: dict[str, torch.Tensor], rtol: float
) -> None:
    """``STEPS`` reference steps on consecutive minibatches of ``batch`` (seed 2, as the learner's
    update): the learner's logged losses and diagnostics equal their means."""
    torch.manual_seed(2)
    ref_steps = [
        reference.step({k: v[i * MINIBATCH : (i + 1) * MINIBATCH] for k, v in batch.items()})
        for i in range(STEPS)
    ]
    atol = rtol / 10
    for name in ref_steps[0][0]:
        expected = sum(step[0][name] for step in ref_steps) / STEPS
        assert logged[LOSS_KEYS[name]] == pytest.approx(expected, rel=rtol, abs=atol), name
    for key in ref_steps[0][1]:
        expected = sum(step[1][key] for step in ref_steps) / STEPS
        assert logged[key] == pytest.approx(expected, rel=rtol, abs=atol), key


#: Small-data options (docs/algorithm.md §2.1): observation statistics, layer-normalised
#: critics with weight decay, and the mean - kappa * std aggregation of the ensemble.
SMALL_DATA = {
    "critic_layer_norm": True,
    "critic_weight_decay": 0.5,
    "critic_aggregation": "mean_std",
    "critic_kappa": 0.7,
}
OBS_STATISTICS = ([0.5 * i for i in range(8)], [1.0 + 0.25 * i for i in range(8)])


@pytest.mark.parametrize(
    ("variant", "num_critics", "torso", "extra"),
    [
        ("fttpo", 2, "shared", {}),
        ("rar", 2, "shared", {}),
        ("reverse_kl", 2, "shared", {}),
        ("fat_only", 2, "shared", {}),
        ("fttpo", 1, "shared", {}),
        ("fttpo", 3, "shared", {}),
        ("fttpo", 2, "own", {}),
        ("fttpo", 3, "shared", SMALL_DATA),
        ("reverse_kl", 4, "shared", SMALL_DATA),
    ],
)
def test_learner_steps_equal_the_reference_steps(variant, num_critics, torso, extra):
    """Three gradient steps of the learner (one update() call) and of the reference, from the
    same parameters with the same seed: equal losses, diagnostics and parameters (float32
    tolerance 1e-5 relative); the parameters moved by far more than that. With the small-data
    options the module also standardises observations with given statistics."""
    config = make_config(variant, num_critics=num_critics, thin_scale_torso=torso, **extra)
    if extra:
        config._obs_statistics = OBS_STATISTICS
    learner = make_learner(config)
    module = learner.module[DEFAULT_MODULE_ID].unwrapped()
    reference = ReferenceStep(copy.deepcopy(module), config)
    start = {name: p.detach().clone() for name, p in module.named_parameters()}
    batch = make_batch(STEPS * MINIBATCH)

    torch.manual_seed(2)
    logged = learner_update(learner, batch, MINIBATCH)
    assert_means_equal_reference_steps(logged, reference, batch, rtol=1e-5)
    assert logged["grad_steps"] == STEPS
    # RLlib's steps-trained counters, logged once per update() call: same totals and means.
    assert logged["num_module_steps_trained"] == STEPS * MINIBATCH
    assert logged["module_train_batch_size_mean"] == MINIBATCH
    assert logged["weights_seq_no"] == 1
    # Layer norm reduces in another order than nn.LayerNorm, and Adam divides rounding
    # differences of near-zero gradients by their own small scale: a looser absolute tolerance.
    assert_same_parameters(module, reference, rtol=1e-5, atol=5e-5 if extra else 1e-6)
    moved = min((p - start[n]).abs().max().item() for n, p in module.named_parameters())
    assert moved > 1e-4


@pytest.mark.slow
def test_compiled_learner_steps_equal_the_reference_steps(caplog):
    """With ``compile_update`` the learner's step compiles as one graph (``fullgraph=True``,
    inductor: no fallback warning) and three steps still equal the reference's (relative
    tolerance 1e-4: inductor fuses and reorders float32 arithmetic). Compilation takes 30-90 s
    on a loaded 2-core machine."""
    config = make_config("fttpo", compile_update=True)
    learner = make_learner(config)
    module = learner.module[DEFAULT_MODULE_ID].unwrapped()
    reference = ReferenceStep(copy.deepcopy(module), config)
    batch = make_batch(STEPS * MINIBATCH)
    torch.manual_seed(2)
    with caplog.at_level("WARNING"):
        logged = learner_update(learner, batch, MINIBATCH)
    assert not [r for r in caplog.records if "compile_update" in r.getMessage()]
    assert_means_equal_reference_steps(logged, reference, batch, rtol=1e-4)
    assert_same_parameters(module, reference, rtol=1e-4, atol=1e-5)
    for mine, theirs in zip(module.critics.parameters(), stacked(reference.critics), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-5)


def compiled_and_eager_steps(learner, run_compiled, seed: int = 4):
    """The learner's step on one minibatch, compiled (``run_compiled``) and eager, same seed
    and same parameters, with the learner's tensor-valued hyper-parameters."""
    module = learner.module[DEFAULT_MODULE_ID].unwrapped()
    params = optimizer_params(learner)
    hyper = learner.step_hyper_parameters(DEFAULT_MODULE_ID, learner.config)
    batch = make_batch(MINIBATCH)
    torch.manual_seed(seed)
    with torch._dynamo.config.patch(DYNAMO_CONFIG):
        compiled = run_compiled(module, batch, hyper, params, hyper.q)
    torch.manual_seed(seed)
    eager = losses_and_gradients(module, batch, hyper, params, hyper.q)
    return compiled, eager


def assert_steps_close(compiled, eager, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    """Equal summed loss, losses, diagnostics, checks and gradients (gradients: absolute
    tolerance ``5 atol``, as ``log(1 - r^2)`` near a sparse support's edge amplifies rounding;
    RAR's largest gradient difference is 1.7e-5)."""
    for mine, theirs in zip(compiled[:4], eager[:4], strict=True):
        torch.testing.assert_close(mine, theirs, rtol=rtol, atol=atol)
    for mine, theirs in zip(compiled[4], eager[4], strict=True):
        assert (mine is None) == (theirs is None)
        if mine is not None:
            torch.testing.assert_close(mine, theirs, rtol=rtol, atol=5 * atol)


@pytest.fixture(scope="module")
def inductor_step():
    """One inductor-compiled step shared by the compiled tests of this module (the graphs are
    cached on the step's code object: a variant compiles once per process)."""
    torch._dynamo.reset()
    return torch.compile(losses_and_gradients, fullgraph=True, options=INDUCTOR_OPTIONS)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("variant", "fat_q"), [("fttpo", 2.0), ("rar", 2.0), ("reverse_kl", 2.0), ("fat_only", 1.0)]
)
def test_compiled_step_equals_the_eager_step_for_every_variant(inductor_step, variant, fat_q):
    """Inductor's step with the tensor-valued q, tau and gamma gives the eager step's losses,
    diagnostics, checks and gradients for the same seed (relative tolerance 1e-4: inductor
    fuses and reorders float32 arithmetic). About 5-30 s of compilation per variant."""
    learner = make_learner(make_config(variant, fat_q=fat_q, kl_weight=0.3))
    compiled, eager = compiled_and_eager_steps(learner, inductor_step)
    assert_steps_close(compiled, eager)


@pytest.mark.slow
def test_other_q_tau_and_gamma_reuse_the_compiled_graph(inductor_step):
    """Learners with other fat_q > 1, thin_q, kl_weight, gamma and learning rates run the graph
    compiled for the first (dynamo compiles no new graph; the optimizers step outside it) and
    get their own eager step's values; the Gaussian fat_q = 1 is another graph."""
    from torch._dynamo.utils import counters

    first = make_learner(make_config("fttpo", fat_q=2.0, thin_q=0.0, kl_weight=0.1))
    assert_steps_close(*compiled_and_eager_steps(first, inductor_step))
    graphs = counters["stats"]["unique_graphs"]
    for fat_q, thin_q, kl_weight, gamma in ((1.5, -1.0, 1.0, 0.5), (2.5, 0.5, 0.01, 0.99)):
        config = make_config("fttpo", fat_q=fat_q, thin_q=thin_q, kl_weight=kl_weight)
        learner = make_learner(config.training(gamma=gamma, actor_lr=3e-4, critic_lr=1e-3))
        compiled, eager = compiled_and_eager_steps(learner, inductor_step)
        assert counters["stats"]["unique_graphs"] == graphs
        assert_steps_close(compiled, eager)
        # The values reached the graph: the losses differ from the first learner's.
        assert not torch.allclose(compiled[0], compiled_and_eager_steps(first, inductor_step)[0][0])
    gaussian = make_learner(make_config("fttpo", fat_q=1.0))
    assert_steps_close(*compiled_and_eager_steps(gaussian, inductor_step))
    assert counters["stats"]["unique_graphs"] == graphs + 1


def test_step_hyper_parameters_are_tensors_updated_in_place():
    """The swept values are 0-d float64 tensors (q from the module), filled in place when the
    config changes; another plain field or a change to or from the Gaussian builds anew."""
    learner = make_learner(make_config("fttpo", fat_q=2.0, thin_q=-1.0, kl_weight=0.1))
    module = learner.module[DEFAULT_MODULE_ID].unwrapped()
    hyper = learner.step_hyper_parameters(DEFAULT_MODULE_ID, learner.config)
    assert isinstance(hyper, StepHyperParameters)
    for tensor, value in ((hyper.kl_weight, 0.1), (hyper.gamma, 0.9), (hyper.q.fat, 2.0)):
        assert tensor.dim() == 0 and tensor.dtype == torch.float64 and tensor.item() == value
    assert hyper.q.thin.item() == -1.0
    kl_weight = hyper.kl_weight
    config = copy.deepcopy(learner.config).training(kl_weight=0.7)
    again = learner.step_hyper_parameters(DEFAULT_MODULE_ID, config)
    assert again is hyper and again.kl_weight is kl_weight and kl_weight.item() == 0.7
    other = learner.step_hyper_parameters(
        DEFAULT_MODULE_ID, copy.deepcopy(config).training(kl_num_samples=8)
    )
    assert other is not hyper and other.kl_num_samples == 8
    module.fat_q = 1.0
    gaussian = learner.step_hyper_parameters(DEFAULT_MODULE_ID, config)
    assert gaussian.q.fat == 1.0 and not isinstance(gaussian.q.fat, torch.Tensor)


@pytest.mark.parametrize(
    ("variant", "fat_q"), [("fttpo", 2.0), ("rar", 2.0), ("reverse_kl", 2.0), ("fat_only", 1.0)]
)
def test_every_variant_traces_as_one_graph(variant, fat_q):
    """Dynamo captures the whole forward/loss/backward step of every variant as one graph
    (``fullgraph=True``; tracing only, the ``eager`` backend skips inductor's code generation),
    and the traced step gives the eager step's losses for the same seed."""
    config = make_config(variant, fat_q=fat_q)
    learner = make_learner(config)
    module = learner.module[DEFAULT_MODULE_ID].unwrapped()
    params = optimizer_params(learner)
    batch = make_batch(MINIBATCH)
    torch._dynamo.reset()  # the compiled tests' graphs count towards dynamo's recompile limit
    traced = torch.compile(losses_and_gradients, fullgraph=True, backend="eager")
    torch.manual_seed(4)
    eager = losses_and_gradients(module, batch, config, params)
    torch.manual_seed(4)
    with torch._dynamo.config.patch(DYNAMO_CONFIG):
        out = traced(module, batch, config, params)
    torch.testing.assert_close(out[0], eager[0])
    torch.testing.assert_close(out[1], eager[1])


def test_compile_step_falls_back_to_eager_with_one_warning(caplog):
    """A step dynamo cannot compile as one graph runs eagerly, after one logged warning."""
    calls = []

    def step(x: torch.Tensor):
        calls.append(1)
        if bool(x.sum() > 0):  # data-dependent branch: no single graph
            return x + 1.0, {}, {}, x > 0, ()
        return x - 1.0, {}, {}, x > 0, ()

    run = compile_step(step)
    with caplog.at_level("WARNING"):
        first = run(torch.ones(3))
        second = run(torch.ones(3))
    torch.testing.assert_close(first[0], torch.full((3,), 2.0))
    torch.testing.assert_close(second[0], torch.full((3,), 2.0))
    warnings = [r for r in caplog.records if "compile_update" in r.getMessage()]
    assert len(warnings) == 1
    assert len(calls) == 2  # eager from the first call on


@pytest.mark.parametrize("variant", VARIANTS)
def test_gradient_step_reads_no_tensor_value_on_the_host(monkeypatch, variant):
    """Forward, losses, backward, fused Adam and polyak never convert a tensor to a Python
    value (``bool``/``item``/``tolist``/``int``/``float``): the device never has to wait."""
    config = make_config(variant)
    learner = make_learner(config)
    module = learner.module[DEFAULT_MODULE_ID].unwrapped()
    params = optimizer_params(learner)
    optimizers = [opt for _, opt in learner.get_optimizers_for_module(DEFAULT_MODULE_ID)]
    batch = make_batch(MINIBATCH)

    def forbidden(*args, **kwargs):
        raise AssertionError("host read of a tensor value")

    for name in ("__bool__", "item", "tolist", "__int__", "__float__"):
        monkeypatch.setattr(torch.Tensor, name, forbidden)
    for _ in range(2):
        _, _, _, _, grads = losses_and_gradients(module, batch, config, params)
        for p, g in zip(params, grads, strict=True):
            p.grad = g
        for opt in optimizers:
            opt.step()
        polyak_update(module, config.polyak)


@pytest.mark.parametrize("variant", VARIANTS)
def test_each_loss_reaches_only_its_optimizers_parameters(variant):
    """Why one backward pass over the summed losses is the Jacobi order of the paper's four
    updates: each loss's gradient is non-zero on its own optimizer's parameters and exactly
    zero (or absent) on every other optimizer's."""
    learner = make_learner(make_config(variant))
    module = learner.module[DEFAULT_MODULE_ID].unwrapped()
    owned = {
        name.split("_", 1)[-1] if name.startswith(DEFAULT_MODULE_ID) else name: list(
            learner._optimizer_parameters[opt]
        )
        for name, opt in learner.get_optimizers_for_module(DEFAULT_MODULE_ID)
    }
    expected = {CRITIC, VALUE} | ({FAT} if variant in ("fttpo", "fat_only") else set())
    expected |= {THIN} if variant != "fat_only" else set()
    assert set(owned) == expected
    all_params = [p for params in owned.values() for p in params]
    assert len({id(p) for p in all_params}) == len(all_params)  # no parameter in two groups

    from fttpo_ray.algorithms.fttpo.torch.fttpo_torch_learner import fttpo_losses

    batch = make_batch(MINIBATCH)
    torch.manual_seed(2)
    named, _ = fttpo_losses(module, batch, module.forward_train(batch), make_config(variant))
    assert set(named) == expected
    for name, loss in named.items():
        grads = torch.autograd.grad(loss, all_params, retain_graph=True, allow_unused=True)
        by_param = dict(zip(map(id, all_params), grads, strict=True))
        own = [by_param[id(p)] for p in owned[name]]
        assert any(g is not None and g.abs().sum() > 0 for g in own), name
        for other, params in owned.items():
            if other == name:
                continue
            for p in params:
                g = by_param[id(p)]
                assert g is None or torch.count_nonzero(g) == 0, (name, other, p.shape)


def test_non_finite_message_names_the_first_failed_check():
    checks = [*FLOAT_COLUMNS, "critic_loss", "value_loss", GRADIENT_CHECK]
    never = [-1] * len(checks)
    assert non_finite_message(checks, never) is None
    losses = never[:4] + [5, 4, 4]
    assert non_finite_message(checks, losses).startswith(
        "value_loss became non-finite at gradient step 4;"
    )
    column = [-1, 4, -1, -1, 4, 4, 4]
    assert "batch column 'actions' at gradient step 4" in non_finite_message(checks, column)
    gradient = never[:-1] + [7]
    assert non_finite_message(checks, gradient).startswith("non-finite gradient at gradient step 7")


@pytest.mark.parametrize(("field", "value"), [("num_critics", 0), ("compile_update", "yes")])
def test_new_fields_are_validated(field, value):
    config = FtTPOConfig().dataset("fttpo/treatment/random-v0").training(**{field: value})
    with pytest.raises(ConfigError, match=f"`{field}` must be"):
        config.validate()


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        (
            "_torch_lr_scheduler_classes",
            [functools.partial(torch.optim.lr_scheduler.StepLR, step_size=1)],
        ),
        ("_torch_grad_scaler_class", torch.amp.GradScaler),
    ],
)
def test_rllib_settings_fttpo_cannot_honour_are_rejected(setting, value):
    """RLlib 2.60 schedules only the last of a module's optimizers and shares one grad scaler
    among them: with FtTPO's four optimizers, validate() refuses both instead of ignoring them."""
    config = FtTPOConfig().dataset("fttpo/treatment/random-v0").experimental(**{setting: value})
    with pytest.raises(ConfigError, match=f"`{setting}` is not supported by FtTPO"):
        config.validate()
