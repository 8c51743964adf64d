"""FtTPOConfig validation (layer: exact) and the registry."""

from __future__ import annotations

import os
from pathlib import Path

import psutil
import pytest
import ray

import fttpo_ray
from fttpo_ray import FtTPO, FtTPOConfig
from fttpo_ray.errors import ConfigError, DatasetError

MISSING_DATASET = "fttpo/no-such/dataset-v0"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"fat_q": 3.0}, "`fat_q` must be in [1, 3)"),
        ({"fat_q": 0.5}, "`fat_q` must be in [1, 3)"),
        ({"thin_q": 1.3}, "`thin_q` must be < 1 for a sparse (thin) policy; got 1.3"),
        ({"kl_weight": 0.0}, "`kl_weight` (tau) must be > 0; got 0.0"),
        ({"weight_q": 1.5}, "`weight_q` must be <= 1"),
        ({"w_max": 0.0}, "`w_max` must be > 1e-8"),
        ({"actor_lr": -1e-3}, "`actor_lr` must be > 0"),
        ({"critic_lr": 0.0}, "`critic_lr` must be > 0"),
        ({"value_lr": 0.0}, "`value_lr` must be > 0"),
        ({"polyak": 0.0}, "`polyak` must be in (0, 1]"),
        ({"gamma": 1.5}, "`gamma` must be in [0, 1]"),
        (
            {"variant": "awac"},
            "`variant` must be one of fttpo, rar, reverse_kl, fat_only; got 'awac'",
        ),
        ({"kl_num_samples": 0}, "`kl_num_samples` must be an integer >= 1; got 0"),
        ({"rar_num_samples": 2.5}, "`rar_num_samples` must be an integer >= 1"),
        ({"num_gradient_steps_per_iteration": 0}, "`num_gradient_steps_per_iteration` must be"),
        ({"kl_ratio_clip": 1.0}, "`kl_ratio_clip` must be > 1"),
        (
            {"thin_halfwidth_bounds": (0.5, 0.1)},
            "`thin_halfwidth_bounds` must be a pair (low, high) with 0 < low < high; "
            "got (0.5, 0.1)",
        ),
        ({"fat_scale_bounds": (0.0, 1.0)}, "`fat_scale_bounds` must be a pair (low, high)"),
        ({"thin_halfwidth_torso": "other"}, "`thin_halfwidth_torso` must be 'shared' or 'own'"),
        ({"fat_q": "2"}, "`fat_q` must be a number; got '2'"),
        ({"thin_q": float("nan")}, "`thin_q` must be finite"),
        ({"thin_support_in_box": "yes"}, "`thin_support_in_box` must be true or false; got 'yes'"),
    ],
)
def test_validate_names_the_field_the_value_and_the_range(settings, message):
    config = FtTPOConfig().dataset("fttpo/treatment/random-v0").training(**settings)
    with pytest.raises(ConfigError) as info:
        config.validate()
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)  # RLlib and Tune treat it as a config error


def test_the_split_belongs_to_the_dataset_and_is_checked():
    config = FtTPOConfig().dataset("x").debugging(seed=7)
    assert (config.held_out_fraction, config.split_seed) == (0.2, 0)  # not derived from seed
    config.dataset("x", held_out_fraction=0.3, split_seed=4)
    assert (config.held_out_fraction, config.split_seed) == (0.3, 4)
    config.dataset("x", split_seed=-1)
    with pytest.raises(ConfigError, match="`split_seed` must be an integer >= 0; got -1"):
        config.validate()
    with pytest.warns(DeprecationWarning, match=r"\.dataset\(\.\.\., held_out_fraction"):
        config = FtTPOConfig().training(held_out_fraction=0.1)
    assert config.held_out_fraction == 0.1


def test_old_halfwidth_names_still_work_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="`thin_scale_bounds` is deprecated"):
        config = FtTPOConfig().training(thin_scale_bounds=(0.01, 0.5))
    assert config.thin_halfwidth_bounds == (0.01, 0.5)
    assert config.model_config["thin_halfwidth_bounds"] == (0.01, 0.5)
    with pytest.warns(DeprecationWarning, match="`thin_scale_torso` is deprecated"):
        config = FtTPOConfig().update_from_dict({"thin_scale_torso": "own"})
    assert config.thin_halfwidth_torso == "own" and not hasattr(config, "thin_scale_torso")
    # The new name wins where both are given.
    with pytest.warns(DeprecationWarning):
        config = FtTPOConfig().training(thin_halfwidth_torso="own", thin_scale_torso="shared")
    assert config.thin_halfwidth_torso == "own"


def test_a_checkpointed_config_of_before_the_renames_restores_under_the_new_names():
    """A config state written before the halfwidth rename and before the split belonged to the
    data: the old fields come back under their names, and the split seed is the one it was
    then derived from (the training seed), so a restored run holds out the same episodes."""
    state = FtTPOConfig().dataset("x").debugging(seed=5).get_state()
    state["thin_scale_bounds"] = state.pop("thin_halfwidth_bounds")
    state["thin_scale_bounds"] = (0.02, 0.4)
    state["thin_scale_torso"] = "own"
    del state["thin_halfwidth_torso"], state["split_seed"]
    config = FtTPOConfig.from_state(state)
    assert (config.thin_halfwidth_bounds, config.thin_halfwidth_torso) == ((0.02, 0.4), "own")
    assert config.split_seed == 5
    assert not hasattr(config, "thin_scale_bounds")
    again = FtTPOConfig.from_state(config.get_state())
    assert (again.split_seed, again.thin_halfwidth_torso) == (5, "own")


def test_grouped_settings_set_the_attributes_and_check_their_preconditions():
    config = (
        FtTPOConfig()
        .dataset("x")
        .selection(criterion="policy_q")
        .certificate(
            enabled=True, safe_action=1.0, alpha=0.1, members=3, hiddens=[8], grid_points=5
        )
    )
    assert config.selection_criterion == "policy_q"
    assert (
        config.safety_certificate,
        config.safe_action,
        config.certificate_alpha,
        config.certificate_members,
        config.certificate_hiddens,
        config.certificate_grid_points,
    ) == (True, 1.0, 0.1, 3, [8], 5)
    config.validate()
    with pytest.raises(
        ConfigError,
        match="`selection_criterion` must be one of td_error, relative_td_error, policy_q",
    ):
        FtTPOConfig().dataset("x").selection(criterion="return").validate()
    # The certificate's action-space precondition runs once the spaces are known.
    import gymnasium as gym
    import numpy as np

    config.environment(action_space=gym.spaces.Box(-1.0, 1.0, (2,), np.float32))
    with pytest.raises(ConfigError, match="needs a 1-D action space; 'x' has actions of shape"):
        config.validate()


def test_every_field_of_the_table_is_a_config_attribute_with_a_valid_default():
    from fttpo_ray.algorithms.fttpo.fields import FIELDS, check_field

    config = FtTPOConfig()
    for name, field in FIELDS.items():
        check_field(name, field, getattr(config, name))


def test_validate_requires_a_dataset():
    with pytest.raises(ConfigError, match="no dataset"):
        FtTPOConfig().validate()


def test_seeds_must_be_non_negative_integers():
    config = FtTPOConfig().dataset("x").evaluation(evaluation_seed=-1)
    with pytest.raises(ConfigError, match="`evaluation_seed` must be an integer >= 0; got -1"):
        config.validate()
    config = FtTPOConfig().dataset("x").debugging(seed=-1)
    with pytest.raises(ConfigError, match="`seed` must be an integer >= 0; got -1"):
        config.validate()


def listing(root: Path) -> set[Path]:
    return set(root.rglob("*"))


def test_validate_reads_writes_and_starts_nothing(
    minari_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """validate() only checks values: the dataset is resolved where the algorithm is built."""
    monkeypatch.chdir(tmp_path)
    assert not ray.is_initialized()
    before = (listing(minari_root), listing(tmp_path), psutil.Process().children(recursive=True))
    config = FtTPOConfig().dataset(MISSING_DATASET)
    config.validate()
    after = (listing(minari_root), listing(tmp_path), psutil.Process().children(recursive=True))
    assert after == before
    assert not ray.is_initialized()
    assert config.input_ == "sampler" and config.env is None  # RLlib's defaults, untouched

    with pytest.raises(DatasetError) as info:
        config.build_algo()
    message = str(info.value)
    assert f"dataset '{MISSING_DATASET}' does not exist" in message
    assert f"fttpo collect --env ENV --episodes N --dataset-id {MISSING_DATASET}" in message
    assert os.linesep not in message


def test_evaluation_must_count_episodes():
    config = FtTPOConfig().dataset("x").evaluation(evaluation_duration_unit="timesteps")
    with pytest.raises(ConfigError, match="evaluation_duration_unit"):
        config.validate()


def test_training_setters_return_the_config_and_set_fields():
    config = FtTPOConfig().training(fat_q=1.5, thin_q=-1.0, kl_weight=0.5, variant="rar", gamma=0.9)
    assert (config.fat_q, config.thin_q, config.kl_weight, config.variant, config.gamma) == (
        1.5,
        -1.0,
        0.5,
        "rar",
        0.9,
    )
    model_config = config.model_config
    assert model_config["fat_q"] == 1.5 and model_config["variant"] == "rar"


def test_registry_is_idempotent_and_reaches_tune_and_rllib():
    from ray.rllib.algorithms.registry import ALGORITHMS
    from ray.tune.registry import get_trainable_cls

    fttpo_ray.register_all()
    fttpo_ray.register_all()
    assert get_trainable_cls("FtTPO") is FtTPO
    algo_class, default_config = ALGORITHMS["FtTPO"]()
    assert algo_class is FtTPO and isinstance(default_config, FtTPOConfig)


def test_config_survives_tunes_dict_round_trip():
    config = FtTPOConfig().dataset("fttpo/treatment/random-v0").training(fat_q=1.5, kl_weight=0.3)
    restored = FtTPOConfig.from_dict(config.to_dict())
    assert (restored.fat_q, restored.kl_weight, restored.dataset_id) == (
        1.5,
        0.3,
        "fttpo/treatment/random-v0",
    )
