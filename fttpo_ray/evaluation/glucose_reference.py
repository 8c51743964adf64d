"""Reference policies of the glucose environment (``fttpo/GlucoseBolus-v0``, docs/algorithm.md
§4.1) and their rows, scored by :func:`fttpo_ray.evaluation.evaluate_policies` exactly as the
learned policies are (same episodes, same metrics: return, time in range and the other glucose
counts per patient group, prohibited-bolus rate with its Clopper–Pearson bound, deaths).

Four reference policies, each an :class:`~fttpo_ray.evaluation.EvalPolicy` of the observation:

- :data:`NO_BOLUS`: no meal bolus (action -1); basal insulin only.
- :data:`BASAL_BOLUS`: simglucose's basal-bolus controller
  (:func:`~fttpo_ray.envs.glucose.basal_bolus_action`): ``carbs / CR`` plus a correction above
  150 mg/dL, from the patient's own CR and CF (observation features 7 and 8).
- :data:`BEHAVIOUR`: the datasets' behaviour policy, the basal-bolus dose times log-normal noise
  ``exp(σ z)``, ``z ~ N(0, 1)`` drawn with torch (so the evaluator's seeding makes it
  reproducible); ``σ = 0`` is the clean controller. One row per σ (:func:`behaviour_name`), as
  the datasets of a sweep have them.
- :data:`BEST_RATIO`: the best *state-independent* rule, ``bolus = r · carbs`` with one ratio
  ``r`` (U/g) for every patient and no correction: every ``r`` of a grid is rolled out on
  *selection* episodes (``SELECTION_SEED + i``), the one with the highest mean return there is
  chosen and scored on the *evaluation* episodes (``EVALUATION_SEED + i``), so the choice is never
  scored on the episodes it was made on (the glucose analogue of the best constant dose,
  :func:`fttpo_ray.evaluation.reference.constant_dose_reference`). The whole grid's selection
  metrics are kept for the frontier.

Actions map to boluses as the environment does: ``a = 2 clip(bolus / max_bolus, 0, 1) - 1``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import inspect
import json
import logging
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import torch

from fttpo_ray import metrics as m
from fttpo_ray.defaults import EVALUATION_EPISODES, EVALUATION_SEED, SELECTION_SEED
from fttpo_ray.envs import GLUCOSE_ENV_ID
from fttpo_ray.envs import glucose as glucose_env_module
from fttpo_ray.envs.glucose import (
    CARBS_SCALE,
    DEFAULT_MAX_BOLUS,
    OBS_DIM,
    GlucoseBolusEnv,
    basal_bolus_action,
    noisy_bolus,
)
from fttpo_ray.envs.glucose import observed_basal_bolus_dose as observed_dose
from fttpo_ray.errors import ConfigError
from fttpo_ray.evaluation import rollout as rollout_module
from fttpo_ray.evaluation.reference import check_selection_seeds
from fttpo_ray.evaluation.rollout import EvalPolicy, evaluate_policies

logger = logging.getLogger(__name__)

#: Names of the reference rows (keys of :attr:`GlucoseReference.rows`).
NO_BOLUS = "no bolus"
BASAL_BOLUS = "basal-bolus (clean)"
BEHAVIOUR = "behaviour (basal-bolus × lognormal σ)"
BEST_RATIO = "best state-independent rule"
#: Ratios (U per gram of carbohydrate) of the state-independent rule's grid: 0 to 0.3, step 0.025.
RATIO_GRID = tuple(round(0.025 * i, 3) for i in range(13))
#: Selection episodes of the ratio grid (``SELECTION_SEED + i``).
SELECTION_EPISODES = 30
#: ``env_config`` key of the largest bolus (U), as the environment takes it.
MAX_BOLUS = "max_bolus"


class FixedActions:
    """A point mass at given actions (shape ``(B, 1)``): ``sample(shape)`` repeats them."""

    def __init__(self, actions: torch.Tensor) -> None:
        self.mean = actions

    def sample(self, sample_shape: Sequence[int] = ()) -> torch.Tensor:
        return self.mean.expand(*sample_shape, *self.mean.shape).clone()


class LognormalBolus:
    """The basal-bolus dose times ``exp(σ z)``, ``z ~ N(0, 1)`` (torch's global RNG), as actions.

    ``mean`` holds the clean controller's actions (the noise's median: ``exp(0) = 1``).
    """

    def __init__(self, dose: torch.Tensor, sigma: float, max_bolus: float) -> None:
        self.dose, self.sigma, self.max_bolus = dose, sigma, max_bolus
        self.mean = dose_action(dose, max_bolus).float()

    def sample(self, sample_shape: Sequence[int] = ()) -> torch.Tensor:
        z = torch.randn(*sample_shape, *self.dose.shape, dtype=torch.float64)
        bolus = noisy_bolus(self.dose.numpy(), self.sigma, z.numpy())
        return dose_action(torch.from_numpy(bolus), self.max_bolus).float()


def dose_action(dose: torch.Tensor, max_bolus: float) -> torch.Tensor:
    """Bolus (U) -> action in [-1, 1]: ``2 clip(dose / max_bolus, 0, 1) - 1``."""
    return 2.0 * torch.clamp(dose / max_bolus, 0.0, 1.0) - 1.0


def _mean(dist: Any) -> torch.Tensor:
    return dist.mean


def _check_obs(obs: torch.Tensor) -> torch.Tensor:
    if obs.ndim != 2 or obs.shape[1] != OBS_DIM:
        raise ConfigError(
            f"glucose reference policies take observations of shape (B, {OBS_DIM}); got "
            f"{tuple(obs.shape)}"
        )
    return obs


def observed_basal_bolus_dose(obs: torch.Tensor) -> torch.Tensor:
    """The clean controller's bolus (U, float64, shape ``(B, 1)``) from observations
    (:func:`fttpo_ray.envs.glucose.observed_basal_bolus_dose`), not yet clipped to the pump."""
    dose = observed_dose(_check_obs(obs).double().numpy())
    return torch.as_tensor(dose, dtype=torch.float64)[:, None]


def _check_non_negative(name: str, what: str, value: object) -> None:
    if isinstance(value, bool) or not (
        isinstance(value, int | float) and 0.0 <= float(value) < math.inf
    ):
        raise ConfigError(f"{what} `{name}` must be a finite number >= 0; got {value!r}")


def no_bolus_policy() -> EvalPolicy:
    """:data:`NO_BOLUS`: the action -1 (bolus 0) at every decision."""
    return EvalPolicy(
        name=NO_BOLUS,
        distribution=lambda obs: FixedActions(-torch.ones(_check_obs(obs).shape[0], 1)),
        deterministic=_mean,
    )


def basal_bolus_policy(max_bolus: float = DEFAULT_MAX_BOLUS) -> EvalPolicy:
    """:data:`BASAL_BOLUS`: :func:`~fttpo_ray.envs.glucose.basal_bolus_action`."""

    def distribution(obs: torch.Tensor) -> FixedActions:
        action = basal_bolus_action(_check_obs(obs).numpy(), max_bolus)
        return FixedActions(torch.as_tensor(action))

    return EvalPolicy(name=BASAL_BOLUS, distribution=distribution, deterministic=_mean)


def behaviour_policy(sigma: float, max_bolus: float = DEFAULT_MAX_BOLUS) -> EvalPolicy:
    """:data:`BEHAVIOUR`: the basal-bolus dose times ``exp(σ z)`` (``sigma`` >= 0); its
    deterministic action is the clean controller's."""
    _check_non_negative("sigma", "behaviour noise", sigma)
    return EvalPolicy(
        name=behaviour_name(sigma),
        distribution=lambda obs: LognormalBolus(
            observed_basal_bolus_dose(obs), float(sigma), max_bolus
        ),
        deterministic=_mean,
    )


def behaviour_name(sigma: float) -> str:
    """Row name of the behaviour policy with noise ``sigma``."""
    return f"{BEHAVIOUR[:-1]} = {float(sigma):g})"


def ratio_policy(ratio: float, max_bolus: float = DEFAULT_MAX_BOLUS) -> EvalPolicy:
    """The state-independent rule ``bolus = ratio · carbs`` (U/g; no correction), named
    :func:`ratio_name`."""
    _check_non_negative("ratio", "U-per-gram", ratio)

    def distribution(obs: torch.Tensor) -> FixedActions:
        carbs = _check_obs(obs)[:, 2:3].double() * CARBS_SCALE
        return FixedActions(dose_action(float(ratio) * carbs, max_bolus).float())

    return EvalPolicy(name=ratio_name(ratio), distribution=distribution, deterministic=_mean)


def ratio_name(ratio: float) -> str:
    """Name of the rule with ``ratio`` U/g (a grid point of the frontier)."""
    return f"{float(ratio):g} U/g"


@dataclass(frozen=True)
class GlucoseReference:
    """The reference rows on the evaluation episodes and the ratio grid on the selection ones.

    ``rows[name]``: metrics of :func:`~fttpo_ray.evaluation.evaluate_policies` for
    :data:`NO_BOLUS`, :data:`BASAL_BOLUS`, :func:`behaviour_name` of each of ``sigmas`` and
    :data:`BEST_RATIO` (the chosen ratio), in that order. ``selection[r]``: the metrics of
    ratio ``r`` on the selection episodes; ``best_ratio``: the ratio with the highest selection
    return (ties: the smallest ratio).
    """

    rows: dict[str, dict[str, float]]
    best_ratio: float
    selection: dict[float, dict[str, float]]
    sigmas: tuple[float, ...]
    episodes: int
    seed: int
    selection_episodes: int
    selection_seed: int
    ratios: tuple[float, ...] = field(default=())


def _max_bolus(env_config: dict[str, Any]) -> float:
    return float(env_config.get(MAX_BOLUS, DEFAULT_MAX_BOLUS))


def select_ratio(
    env_id: str = GLUCOSE_ENV_ID,
    *,
    ratios: Sequence[float] = RATIO_GRID,
    episodes: int = SELECTION_EPISODES,
    seed: int = SELECTION_SEED,
    env_config: dict[str, Any] | None = None,
) -> tuple[float, dict[float, dict[str, float]]]:
    """``(best ratio, {ratio: metrics})`` of the rule ``r · carbs`` for every ``ratios`` on
    episodes ``seed + i``; the best has the highest mean return (ties: the smallest ratio).

    The environment keeps its per-step oracle labels (the per-group violation rates of the
    records come from them; they cost ~5 % of a rollout).
    """
    grid = [float(r) for r in ratios]
    if not grid:
        raise ConfigError("the U-per-gram `ratios` grid is empty; give at least one ratio")
    if len(set(grid)) != len(grid):
        raise ConfigError(f"the U-per-gram `ratios` grid has duplicates: {grid}")
    config = dict(env_config or {})
    max_bolus = _max_bolus(config)
    policies = [ratio_policy(r, max_bolus) for r in grid]
    results = evaluate_policies(
        policies, env_id, env_config=config, episodes=episodes, seed=seed, explore=False
    )
    selection = {r: results[p.name] for r, p in zip(grid, policies, strict=True)}
    best = max(grid, key=lambda r: (selection[r][m.EPISODE_RETURN_MEAN], -r))
    return best, selection


def glucose_references(
    env_id: str = GLUCOSE_ENV_ID,
    *,
    episodes: int = EVALUATION_EPISODES,
    seed: int = EVALUATION_SEED,
    selection_episodes: int = SELECTION_EPISODES,
    selection_seed: int = SELECTION_SEED,
    sigmas: Sequence[float] = (),
    ratios: Sequence[float] = RATIO_GRID,
    env_config: dict[str, Any] | None = None,
    cache_dir: Path | None = None,
) -> GlucoseReference:
    """The reference rows on episodes ``seed + i`` (a behaviour row per noise of ``sigmas``;
    none when empty) after choosing the ratio on episodes ``selection_seed + i``
    (``selection_episodes`` of them).

    The two ranges of reset seeds must not overlap (checked). Each row is the metrics of
    :func:`~fttpo_ray.evaluation.evaluate_policies` with ``explore=True`` (the behaviour policy
    samples its noise; the others are deterministic).

    With ``cache_dir``, the result is kept there as JSON under a key of every argument and of
    the source of the simulator and the evaluator (:func:`reference_cache_key`), and read
    back instead of rolled out again (a 300-day reference section takes ~20 min of one core).
    """
    question = {
        "env_id": env_id,
        "episodes": episodes,
        "seed": seed,
        "selection_episodes": selection_episodes,
        "selection_seed": selection_seed,
        "sigmas": [float(s) for s in sigmas],
        "ratios": [float(r) for r in ratios],
        "env_config": env_config or {},
    }
    key = reference_cache_key(question)
    cached = None if cache_dir is None else Path(cache_dir) / f"glucose-references-{key}.json"
    if cached is not None and cached.is_file():
        data = json.loads(cached.read_text(encoding="utf-8"))
        data["selection"] = {float(r): v for r, v in data["selection"]}
        data["sigmas"], data["ratios"] = tuple(data["sigmas"]), tuple(data["ratios"])
        logger.info("Glucose reference rows read from %s", cached)
        return GlucoseReference(**data)
    reference = _rolled_out(**question)
    if cached is not None:
        data = dataclasses.asdict(reference)
        data["selection"] = list(reference.selection.items())
        cached.parent.mkdir(parents=True, exist_ok=True)
        staging = cached.with_name(f".{cached.name}.{os.getpid()}")
        staging.write_text(json.dumps(data), encoding="utf-8")
        staging.replace(cached)
    return reference


def reference_cache_key(question: dict[str, Any]) -> str:
    """A hash of the arguments of :func:`glucose_references` (``question``, JSON data) and of
    the source files of the simulator, its reference policies and the evaluator: a cached
    result is reused only for the same question asked of the same code."""
    digest = hashlib.sha256()
    digest.update(json.dumps(question, sort_keys=True).encode())
    for module in (glucose_env_module, rollout_module, sys.modules[__name__]):
        digest.update(Path(inspect.getfile(module)).read_bytes())
    return digest.hexdigest()[:16]


def _rolled_out(
    env_id: str,
    episodes: int,
    seed: int,
    selection_episodes: int,
    selection_seed: int,
    sigmas: Sequence[float],
    ratios: Sequence[float],
    env_config: dict[str, Any] | None,
) -> GlucoseReference:
    """:func:`glucose_references` without the cache."""
    if episodes < 1:
        raise ConfigError(f"reference `episodes` must be >= 1; got {episodes}")
    check_selection_seeds(episodes, seed, selection_episodes, selection_seed)
    config = dict(env_config or {})
    max_bolus = _max_bolus(config)
    best, selection = select_ratio(
        env_id,
        ratios=ratios,
        episodes=selection_episodes,
        seed=selection_seed,
        env_config=config,
    )
    policies = [no_bolus_policy(), basal_bolus_policy(max_bolus)]
    policies += [behaviour_policy(s, max_bolus) for s in sigmas]
    chosen = ratio_policy(best, max_bolus)
    policies.append(EvalPolicy(BEST_RATIO, chosen.distribution, chosen.deterministic))
    rows = evaluate_policies(
        policies, env_id, env_config=config, episodes=episodes, seed=seed, explore=True
    )
    return GlucoseReference(
        rows=rows,
        best_ratio=best,
        selection=selection,
        sigmas=tuple(float(s) for s in sigmas),
        episodes=episodes,
        seed=seed,
        selection_episodes=selection_episodes,
        selection_seed=selection_seed,
        ratios=tuple(selection),
    )


def is_glucose_env(env_id: str) -> bool:
    """Whether ``env_id`` makes the glucose environment (False if it cannot be made here)."""
    try:
        env = gym.make(env_id)
    except Exception:  # noqa: BLE001 - an env that cannot be made is not the glucose one
        return False
    try:
        return isinstance(env.unwrapped, GlucoseBolusEnv)
    finally:
        env.close()
