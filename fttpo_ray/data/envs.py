"""Making environments by id with one-line errors (the treatment envs registered first)."""

from __future__ import annotations

import gymnasium as gym

from fttpo_ray.errors import EnvironmentSpecError, FttpoError, first_line

#: Examples quoted in error messages.
_EXAMPLE_IDS = "fttpo/TreatmentSim-v0, fttpo/TreatmentSimLethal-v0, HalfCheetah-v5"


def make_env(env_id: str, **kwargs: object) -> gym.Env:
    """``gym.make(env_id, **kwargs)`` raising :class:`EnvironmentSpecError` for unknown ids or
    environments that cannot be built (e.g. a missing simulator package)."""
    import fttpo_ray.envs  # noqa: F401 - registers the treatment ids

    if not isinstance(env_id, str) or not env_id:
        raise EnvironmentSpecError(f"environment id must be a non-empty string; got {env_id!r}")
    try:
        gym.spec(env_id)
    except gym.error.Error:
        raise EnvironmentSpecError(
            f"unknown environment id '{env_id}'; use a registered gymnasium id such as "
            f"{_EXAMPLE_IDS}"
        ) from None
    try:
        return gym.make(env_id, **kwargs)
    except FttpoError:
        raise
    except Exception as err:  # noqa: BLE001 - any failure to build is reported as one line
        raise EnvironmentSpecError(
            f"environment '{env_id}' could not be created "
            f"({type(err).__name__}: {first_line(err)}); install its dependencies "
            "(e.g. gymnasium[mujoco]) or fix its arguments"
        ) from None
