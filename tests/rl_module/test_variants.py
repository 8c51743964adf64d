"""The variant table (``fttpo_ray/rl_module/variants.py``): its rows, its errors, that a new
row alone makes a working variant, and that no other module of the package steers by a
variant's name."""

from __future__ import annotations

import ast
import dataclasses
import types
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType

import gymnasium as gym
import pytest
import torch
from ray.rllib.core.rl_module.rl_module import RLModuleSpec

from fttpo_ray import metrics as m
from fttpo_ray.algorithms.fttpo.evaluation import fttpo_policies
from fttpo_ray.algorithms.fttpo.fttpo_learner import CRITIC, FAT, THIN, VALUE
from fttpo_ray.algorithms.fttpo.torch.fttpo_torch_learner import (
    THIN_LOSSES,
    fttpo_losses,
    optimizer_groups,
)
from fttpo_ray.errors import ConfigError
from fttpo_ray.rl_module import variants
from fttpo_ray.rl_module.fttpo_rl_module import FAT_SCALE_HEAD, FtTPOTorchRLModule
from fttpo_ray.rl_module.variants import (
    VARIANTS,
    Policy,
    ThinLoss,
    VariantSpec,
    variant_spec,
    variants_acting,
)
from tests.algorithms.test_fttpo_learner import CONFIG, make_batch

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "fttpo_ray"
TABLE_MODULE = PACKAGE / "rl_module" / "variants.py"

# ---- the rows, checked by hand against docs/algorithm.md §2-§3 ---------------------------------


@pytest.mark.parametrize(
    (
        "name",
        "acting",
        "has_fat",
        "has_thin",
        "thin_loss",
        "thin_detached",
        "proposal",
        "fat_on_learner_only",
    ),
    [
        ("fttpo", Policy.THIN, True, True, ThinLoss.FAT_TO_THIN_KL, True, Policy.FAT, True),
        (
            "rar",
            Policy.THIN,
            False,
            True,
            ThinLoss.RANDOM_ACTION_REPLACEMENT,
            False,
            Policy.THIN,
            False,
        ),
        (
            "reverse_kl",
            Policy.THIN,
            False,
            True,
            ThinLoss.BOLTZMANN_REVERSE_KL,
            False,
            Policy.THIN,
            False,
        ),
        ("fat_only", Policy.FAT, True, False, None, False, Policy.FAT, False),
    ],
)
def test_each_row_states_its_variant(
    name, acting, has_fat, has_thin, thin_loss, thin_detached, proposal, fat_on_learner_only
):
    spec = variant_spec(name)
    assert spec is VARIANTS[name]
    assert spec.name == name
    assert spec.acting_policy is acting
    assert spec.has_fat is has_fat
    assert spec.has_thin is has_thin
    assert spec.thin_loss is thin_loss
    assert spec.thin_detached is thin_detached
    assert spec.proposal is proposal
    assert spec.fat_on_learner_only is fat_on_learner_only


def test_the_table_lists_the_four_variants_in_order_and_is_read_only():
    assert list(VARIANTS) == ["fttpo", "rar", "reverse_kl", "fat_only"]
    assert variants.DEFAULT_VARIANT == "fttpo"
    assert variants_acting(Policy.THIN) == ("fttpo", "rar", "reverse_kl")
    assert variants_acting(Policy.FAT) == ("fat_only",)
    with pytest.raises(TypeError):
        VARIANTS["awac"] = VARIANTS["fttpo"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        VARIANTS["fttpo"].has_fat = False  # type: ignore[misc]


def test_every_thin_loss_has_its_loss_function_in_the_learner():
    assert set(THIN_LOSSES) == set(ThinLoss)
    assert len(set(THIN_LOSSES.values())) == len(ThinLoss)


@pytest.mark.parametrize("name", ["awac", "FtTPO", "", None, ["fttpo"]])
def test_an_unknown_variant_names_the_variants(name):
    expected = f"`variant` must be one of fttpo, rar, reverse_kl, fat_only; got {name!r}"
    with pytest.raises(ConfigError) as error:
        variant_spec(name)
    assert str(error.value) == expected


def test_a_module_with_an_unknown_variant_is_refused():
    with pytest.raises(ConfigError, match="`variant` must be one of .*; got 'awac'"):
        build_module("awac")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"acting_policy": Policy.FAT, "has_fat": False, "thin_loss": ThinLoss.FAT_TO_THIN_KL},
            "the fat policy acts but there is none",
        ),
        (
            {"acting_policy": Policy.THIN, "has_fat": True, "thin_loss": None},
            "the thin policy acts but there is none",
        ),
        (
            {
                "acting_policy": Policy.THIN,
                "has_fat": False,
                "thin_loss": ThinLoss.BOLTZMANN_REVERSE_KL,
                "thin_detached": True,
            },
            "a detached thin head needs a thin policy and a fat proposal",
        ),
    ],
)
def test_an_inconsistent_row_is_refused(fields, message):
    with pytest.raises(ValueError, match=message):
        VariantSpec(name="bad", **{"thin_detached": False, **fields})


# ---- a new baseline is one row ------------------------------------------------------------------

OBS_SPACE = gym.spaces.Box(-10.0, 10.0, (8,))
ACT_SPACE = gym.spaces.Box(-1.0, 1.0, (2,))

#: A variant that is no row of the table: a fat proposal beside a thin policy trained towards
#: the Boltzmann distribution through the shared torso and location.
NEW = VariantSpec(
    name="fat_and_boltzmann",
    acting_policy=Policy.THIN,
    has_fat=True,
    thin_loss=ThinLoss.BOLTZMANN_REVERSE_KL,
    thin_detached=False,
)


def build_module(variant: str, inference_only: bool = False) -> FtTPOTorchRLModule:
    torch.manual_seed(0)
    return RLModuleSpec(
        module_class=FtTPOTorchRLModule,
        observation_space=OBS_SPACE,
        action_space=ACT_SPACE,
        inference_only=inference_only,
        model_config={"variant": variant, "fcnet_hiddens": [16, 16]},
    ).build()


def test_a_new_row_alone_makes_a_working_variant(monkeypatch):
    monkeypatch.setattr(variants, "VARIANTS", MappingProxyType({**VARIANTS, NEW.name: NEW}))
    module = build_module(NEW.name)
    assert module.spec is NEW
    assert module.get_non_inference_attributes()[-1] == FAT_SCALE_HEAD
    assert [policy.name for policy in fttpo_policies(module)] == [m.THIN, m.FAT]

    torch.manual_seed(2)
    batch = make_batch()
    named, _ = fttpo_losses(module, batch, module.forward_train(batch), CONFIG)
    assert list(named) == [CRITIC, VALUE, FAT, THIN]
    assert all(torch.isfinite(loss) for loss in named.values())

    # The thin loss trains the shared torso and location with the thin head (thin_detached is
    # false), and both actor optimizers own the shared parameters.
    params = dict(module.named_parameters())
    shared = {id(p) for n, p in params.items() if n.startswith(("policy_torso", "loc_head"))}
    lrs = types.SimpleNamespace(critic_lr=1e-3, value_lr=1e-3, actor_lr=1e-3)
    groups = optimizer_groups(module, lrs)
    owned = {name: {id(p) for p in group} for name, (group, _) in groups.items()}
    assert set(owned) == {CRITIC, VALUE, FAT, THIN}
    assert shared <= owned[THIN] and shared <= owned[FAT]
    module.zero_grad(set_to_none=True)
    named[THIN].backward()
    reached = {n.split(".")[0] for n, p in params.items() if p.grad is not None and p.grad.any()}
    assert reached == {"policy_torso", "loc_head", "thin_scale_head"}

    inference = build_module(NEW.name, inference_only=True)
    children = {name for name, _ in inference.named_children()}
    assert "thin_scale_head" in children and FAT_SCALE_HEAD not in children


# ---- nobody else steers by a variant's name -----------------------------------------------------

#: Names of the table module's constants that spell a variant's name.
NAME_CONSTANTS = frozenset(
    key
    for key, value in vars(variants).items()
    if key.startswith("VARIANT_") and isinstance(value, str) and value in VARIANTS
)


def _spells_a_variant(node: ast.AST) -> bool:
    """``node`` is a variant's name: ``variant``/``x.variant``, a variant's name as a string, a
    table name constant (``VARIANT_RAR``), or a tuple/list/set holding one of them."""
    if isinstance(node, ast.Name):
        return node.id == "variant" or node.id in NAME_CONSTANTS
    if isinstance(node, ast.Attribute):
        return node.attr == "variant" or node.attr in NAME_CONSTANTS
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str) and node.value in VARIANTS
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return any(_spells_a_variant(element) for element in node.elts)
    return False


def _is_none_check(operands: tuple[ast.AST, ...]) -> bool:
    """``variant is None`` (whether a variant is known at all) steers nothing by its name."""
    return any(isinstance(op, ast.Constant) and op.value is None for op in operands)


def variant_comparisons(source: str, shown: str) -> Iterator[str]:
    """``file:line: what`` for each comparison with a variant's name (``==``, ``in``, ``is``,
    ...), ``match`` on one, and import of a table name constant in ``source``."""
    for node in ast.walk(ast.parse(source, filename=shown)):
        if isinstance(node, ast.Compare):
            operands = (node.left, *node.comparators)
            if _is_none_check(operands):
                continue
            if any(_spells_a_variant(op) for op in operands):
                yield f"{shown}:{node.lineno}: compares a variant's name"
        elif isinstance(node, ast.Match):
            if _spells_a_variant(node.subject):
                yield f"{shown}:{node.lineno}: matches on a variant's name"
        elif isinstance(node, ast.MatchValue):
            if _spells_a_variant(node.value):
                yield f"{shown}:{node.lineno}: matches on a variant's name"
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if alias.name in NAME_CONSTANTS:
                    yield f"{shown}:{node.lineno}: imports {alias.name}"


def test_no_module_but_the_table_compares_a_variant_name():
    found = [
        message
        for path in sorted(PACKAGE.rglob("*.py"))
        if path != TABLE_MODULE
        for message in variant_comparisons(
            path.read_text(encoding="utf-8"), str(path.relative_to(REPO))
        )
    ]
    assert not found, "read the variant's spec instead:\n" + "\n".join(found)


def test_the_scan_sees_the_table_itself():
    assert {"VARIANT_FTTPO", "VARIANT_RAR", "VARIANT_REVERSE_KL", "VARIANT_FAT_ONLY"} == set(
        NAME_CONSTANTS
    )
    source = TABLE_MODULE.read_text(encoding="utf-8")
    assert not list(variant_comparisons(source, "variants.py"))  # it names, never compares
    assert list(variant_comparisons(source + "\nX = name in VARIANT_RAR\n", "v.py"))


@pytest.mark.parametrize(
    "source",
    [
        "if module.variant == 'rar':\n    pass\n",
        "if variant in FAT_VARIANTS:\n    pass\n",
        "x = cfg['variant'] != VARIANT_FTTPO\n",
        "ok = name not in ('fttpo', 'reverse_kl')\n",
        "match kind:\n    case 'fat_only':\n        pass\n",
        "match self.variant:\n    case _:\n        pass\n",
        "from fttpo_ray.rl_module.variants import VARIANT_RAR\n",
    ],
)
def test_the_scan_finds_a_comparison(source):
    assert len(list(variant_comparisons(source, "toy.py"))) == 1


@pytest.mark.parametrize(
    "source",
    [
        "if module.spec.has_thin:\n    pass\n",
        "if variant_spec(self.variant).acting_policy is not Policy.THIN:\n    pass\n",
        "local = namespace == 'mixtures'\n",
        "if variant is None:\n    pass\n",
        "from fttpo_ray.rl_module.variants import DEFAULT_VARIANT, VARIANTS\n",
    ],
)
def test_the_scan_accepts_reading_the_spec(source):
    assert list(variant_comparisons(source, "toy.py")) == []
