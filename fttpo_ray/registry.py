"""Registration of FtTPO with Tune and RLlib's algorithm registry, and of the environments.

Everything here is idempotent: importing :mod:`fttpo_ray` calls :func:`register_all` once per
process, and calling it again changes nothing.
"""

from __future__ import annotations

from typing import Any

ALGORITHM_NAME = "FtTPO"


def _import_fttpo() -> tuple[type, Any]:
    """RLlib registry entry: ``(algorithm class, default config)``."""
    from fttpo_ray.algorithms.fttpo.fttpo import FtTPO

    return FtTPO, FtTPO.get_default_config()


def register_all() -> None:
    """Register the gymnasium environments (with gymnasium and Tune), RLlib's ``"FtTPO"``
    registry entry and Tune's ``"FtTPO"`` trainable."""
    from ray.rllib.algorithms import registry as rllib_registry
    from ray.tune.registry import (
        ENV_CREATOR,
        TRAINABLE_CLASS,
        _global_registry,
        register_env,
        register_trainable,
    )

    from fttpo_ray.algorithms.fttpo.fttpo import FtTPO
    from fttpo_ray.envs import (
        GLUCOSE_ENV_ID,
        TREATMENT_ENV_ID,
        TREATMENT_LETHAL_ENV_ID,
        make_glucose_env,
        make_treatment_env,
        make_treatment_lethal_env,
        register_envs,
    )

    register_envs()
    for env_id, creator in (
        (TREATMENT_ENV_ID, make_treatment_env),
        (TREATMENT_LETHAL_ENV_ID, make_treatment_lethal_env),
        (GLUCOSE_ENV_ID, make_glucose_env),
    ):
        if not _global_registry.contains(ENV_CREATOR, env_id):
            register_env(env_id, creator)

    rllib_registry.ALGORITHMS.setdefault(ALGORITHM_NAME, _import_fttpo)
    rllib_registry.ALGORITHMS_CLASS_TO_NAME.setdefault(FtTPO.__name__, ALGORITHM_NAME)
    if not _global_registry.contains(TRAINABLE_CLASS, ALGORITHM_NAME):
        register_trainable(ALGORITHM_NAME, FtTPO)
