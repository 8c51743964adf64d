"""Gymnasium environments of fttpo-ray: the treatment simulator, its lethal variant, and meal-bolus
dosing on the UVA/Padova type-1 diabetes simulator (:mod:`fttpo_ray.envs.glucose`).

Importing this package registers the ids (idempotently), so that ``gym.make(TREATMENT_ENV_ID)``
works in any process that imported :mod:`fttpo_ray` — RLlib env runners included. A process
that did not can still use ``gym.make("fttpo_ray.envs:fttpo/TreatmentSim-v0")`` (gymnasium
imports the module named before the colon), and RLlib/Tune can register the module-level
creators :func:`make_treatment_env` / :func:`make_treatment_lethal_env` /
:func:`make_glucose_env` (picklable by reference). Registering the glucose id imports neither
simglucose nor the glucose module (string entry point); making the env does.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from fttpo_ray.envs.treatment import (
    DEFAULT_HORIZON,
    DEFAULT_LETHAL_PENALTY,
    DEFAULT_LETHAL_THRESHOLD,
    TreatmentSimEnv,
)

#: Paper dynamics (docs/algorithm.md §4).
TREATMENT_ENV_ID = "fttpo/TreatmentSim-v0"
#: Lethal variant: ``|a| > 0.9`` ends the episode with reward -100 (both configurable).
TREATMENT_LETHAL_ENV_ID = "fttpo/TreatmentSimLethal-v0"
#: Both treatment ids.
TREATMENT_ENV_IDS = (TREATMENT_ENV_ID, TREATMENT_LETHAL_ENV_ID)

#: Meal boluses on the UVA/Padova T1D simulator (docs/algorithm.md §4.1).
GLUCOSE_ENV_ID = "fttpo/GlucoseBolus-v0"

_ENTRY_POINT = "fttpo_ray.envs.treatment:TreatmentSimEnv"
_GLUCOSE_ENTRY_POINT = "fttpo_ray.envs.glucose:GlucoseBolusEnv"

__all__ = [
    "DEFAULT_HORIZON",
    "DEFAULT_LETHAL_PENALTY",
    "DEFAULT_LETHAL_THRESHOLD",
    "GLUCOSE_ENV_ID",
    "TREATMENT_ENV_ID",
    "TREATMENT_ENV_IDS",
    "TREATMENT_LETHAL_ENV_ID",
    "TreatmentSimEnv",
    "make_glucose_env",
    "make_treatment_env",
    "make_treatment_lethal_env",
    "register_envs",
]


def register_envs() -> None:
    """Register the treatment and glucose ids with gymnasium; ids already registered are left
    alone.

    The entry point is a string, so the :class:`~gymnasium.envs.registration.EnvSpec` stored in
    a Minari dataset recreates the environment in a fresh process without this call.
    Truncation (after 24 steps; after the last simulated day) is done by the environments
    themselves (``max_episode_steps`` unset).
    """
    if TREATMENT_ENV_ID not in gym.registry:
        gym.register(id=TREATMENT_ENV_ID, entry_point=_ENTRY_POINT, kwargs={"lethal": False})
    if TREATMENT_LETHAL_ENV_ID not in gym.registry:
        gym.register(id=TREATMENT_LETHAL_ENV_ID, entry_point=_ENTRY_POINT, kwargs={"lethal": True})
    if GLUCOSE_ENV_ID not in gym.registry:
        gym.register(id=GLUCOSE_ENV_ID, entry_point=_GLUCOSE_ENTRY_POINT)


def make_treatment_env(env_config: dict[str, Any] | None = None) -> gym.Env:
    """RLlib/Tune env creator for :data:`TREATMENT_ENV_ID` (``env_config`` = make kwargs)."""
    return gym.make(TREATMENT_ENV_ID, **dict(env_config or {}))


def make_treatment_lethal_env(env_config: dict[str, Any] | None = None) -> gym.Env:
    """RLlib/Tune env creator for :data:`TREATMENT_LETHAL_ENV_ID` (``env_config`` = make kwargs)."""
    return gym.make(TREATMENT_LETHAL_ENV_ID, **dict(env_config or {}))


def make_glucose_env(env_config: dict[str, Any] | None = None) -> gym.Env:
    """RLlib/Tune env creator for :data:`GLUCOSE_ENV_ID` (``env_config`` = make kwargs)."""
    return gym.make(GLUCOSE_ENV_ID, **dict(env_config or {}))


register_envs()
