"""Behaviour and reference policies used to collect datasets.

A policy maps the current observation (and the environment, for oracles that read the hidden
state) to an action in the environment's action space:

- ``"random"``: uniform over the action box, seeded (:class:`RandomPolicy`).
- ``"oracle"``: the treatment simulator's myopic oracle (:class:`OraclePolicy`), the natural
  expert reference of the treatment envs.
- ``"basal-bolus"``: simglucose's basal-bolus controller on the glucose env, its bolus times
  log-normal noise ``exp(sigma z)`` (:class:`BasalBolusPolicy`; ``sigma = 0``: the clean
  controller), the behaviour policy of the glucose datasets.
- a checkpoint directory: an RLlib RLModule acting through ``forward_inference`` and the module's
  own inference action distribution (:class:`CheckpointPolicy`).
"""

from __future__ import annotations

import json
import logging
import numbers
from pathlib import Path
from typing import Protocol

import gymnasium as gym
import numpy as np

from fttpo_ray.errors import ConfigError, EnvironmentSpecError, first_line

logger = logging.getLogger(__name__)

#: Policy names understood by :func:`make_policy` besides checkpoint paths.
RANDOM = "random"
ORACLE = "oracle"
BASAL_BOLUS = "basal-bolus"
#: Range of the basal-bolus policy's log-normal bolus noise ``sigma``.
BOLUS_NOISE_RANGE = (0.0, 2.0)
#: Second entropy word of the basal-bolus noise stream, ``default_rng((seed, this))``: keeps the
#: noise apart from the env's own draws for the same reset seed (``default_rng(seed)``).
BOLUS_NOISE_STREAM = 1
#: Where an Algorithm checkpoint keeps each RLModule: ``<ckpt>/<this>/<module_id>``.
ALGORITHM_MODULE_SUBDIR = Path("learner_group", "learner", "rl_module")
#: Module id of single-agent RLlib algorithms.
DEFAULT_MODULE_ID = "default_policy"
#: An RLlib checkpoint's metadata file, and its ``state_file`` entry in RLModule checkpoints.
_CHECKPOINT_METADATA = "metadata.json"
_STATE_FILE_KEY = "state_file"
_MODULE_STATE_FILE = "module_state"


class Policy(Protocol):
    """What the collector needs from a behaviour policy."""

    #: A one-line description stored as the dataset's ``algorithm_name``.
    description: str

    def act(self, obs: np.ndarray, env: gym.Env) -> np.ndarray:
        """The action (in the env's action space, its dtype) at observation ``obs``."""
        ...

    def seed(self, seed: int) -> None:
        """Restart the policy's randomness from ``seed`` (the collector's per-episode seeding)."""
        ...


class RandomPolicy:
    """Uniform random actions from the environment's action space, seeded once."""

    description = "random (uniform over the action space)"

    def __init__(self, action_space: gym.Space, seed: int) -> None:
        self._space = action_space
        self._space.seed(seed)

    def act(self, obs: np.ndarray, env: gym.Env) -> np.ndarray:
        return self._space.sample()

    def seed(self, seed: int) -> None:
        self._space.seed(seed)


class OraclePolicy:
    """The treatment simulator's myopic oracle (best allowed expected immediate reward)."""

    description = "oracle (treatment simulator's myopic safe oracle)"

    def act(self, obs: np.ndarray, env: gym.Env) -> np.ndarray:
        return env.unwrapped.myopic_oracle_action()

    def seed(self, seed: int) -> None:
        """Deterministic: nothing to seed."""


class BasalBolusPolicy:
    """simglucose's basal-bolus controller on the glucose env, from the observation alone
    (:func:`~fttpo_ray.envs.glucose.basal_bolus_dose`), its bolus times log-normal noise:
    ``dose * exp(sigma z)``, ``z ~ N(0, 1)`` drawn once per decision
    (:func:`~fttpo_ray.envs.glucose.noisy_bolus`; the median bolus is the clean dose).

    The noise comes from ``default_rng((seed, BOLUS_NOISE_STREAM))``; ``sigma = 0`` acts exactly
    as :func:`~fttpo_ray.envs.glucose.basal_bolus_action`.
    """

    def __init__(self, env: gym.Env, sigma: float, seed: int = 0) -> None:
        from fttpo_ray.envs.glucose import GlucoseBolusEnv

        if not isinstance(env.unwrapped, GlucoseBolusEnv):
            raise ConfigError(
                f"policy '{BASAL_BOLUS}' doses insulin on the glucose env "
                f"(fttpo/GlucoseBolus-v0); '{env.spec.id if env.spec else env}' is not it; use "
                "'random' or a checkpoint"
            )
        self.sigma = check_bolus_noise(sigma)
        self._max_bolus = env.unwrapped.max_bolus
        self.description = (
            f"{BASAL_BOLUS} (simglucose's basal-bolus controller, bolus x log-normal noise "
            f"sigma={self.sigma:g})"
        )
        self.seed(seed)

    def act(self, obs: np.ndarray, env: gym.Env) -> np.ndarray:
        from fttpo_ray.envs.glucose import noisy_basal_bolus_action

        z = self._rng.standard_normal()
        return noisy_basal_bolus_action(obs, self.sigma, z, self._max_bolus)

    def seed(self, seed: int) -> None:
        self._rng = np.random.default_rng((seed, BOLUS_NOISE_STREAM))


def check_bolus_noise(sigma: object) -> float:
    """``sigma`` as a float if it is a number in :data:`BOLUS_NOISE_RANGE`, else
    :class:`ConfigError` naming the parameter, the value and the range."""
    low, high = BOLUS_NOISE_RANGE
    if (
        isinstance(sigma, bool)
        or not isinstance(sigma, numbers.Real)
        or not low <= float(sigma) <= high
    ):
        raise ConfigError(
            f"`bolus_noise` (--bolus-noise, the basal-bolus policy's log-normal sigma) must be a "
            f"number in [{low:g}, {high:g}]; got {sigma!r}"
        )
    return float(sigma)


class CheckpointPolicy:
    """An RLlib RLModule from a checkpoint, acting on single observations.

    ``forward_inference`` gives the action-distribution inputs; the module's
    ``get_inference_action_dist_cls()`` turns them into a distribution, sampled, or made
    deterministic (its mode) when ``deterministic=True``. As RLlib's env runners do with
    ``normalize_actions=True`` (the default), the module's action is read as normalised to
    [-1, 1], clipped there, and mapped affinely onto a bounded Box action space.
    """

    def __init__(
        self, path: str | Path, env: gym.Env, deterministic: bool = True, seed: int = 0
    ) -> None:
        import torch
        from ray.rllib.core.rl_module.rl_module import RLModule

        module_dir = find_module_checkpoint(path)
        try:
            self.module = RLModule.from_checkpoint(str(module_dir))
        except Exception as err:  # noqa: BLE001 - any failure here means "not a usable checkpoint"
            raise ConfigError(
                f"could not load an RLModule from '{module_dir}' ({first_line(err)}); pass the "
                "directory of an RLlib Algorithm or RLModule checkpoint"
            ) from None
        self._check_spaces(env, module_dir)
        self._dist_cls = self.module.get_inference_action_dist_cls()
        self._space = env.action_space
        self._deterministic = deterministic
        self._torch = torch
        self.seed(seed)
        mode = "deterministic" if deterministic else "sampled"
        self.description = f"rllib-checkpoint {Path(path).resolve()} ({mode})"
        logger.info("Acting with %s (%s)", type(self.module).__name__, self.description)

    def _check_spaces(self, env: gym.Env, module_dir: Path) -> None:
        spaces = {"observation": self.module.observation_space, "action": self.module.action_space}
        expected = {"observation": env.observation_space, "action": env.action_space}
        for name, space in spaces.items():
            if space is not None and space.shape != expected[name].shape:
                raise EnvironmentSpecError(
                    f"the checkpoint's {name} space {space} does not fit the env's "
                    f"{expected[name]} ('{module_dir}'); use a checkpoint trained on this env"
                )

    def act(self, obs: np.ndarray, env: gym.Env) -> np.ndarray:
        from ray.rllib.core.columns import Columns

        torch = self._torch
        with torch.no_grad():
            batch = {Columns.OBS: torch.as_tensor(np.asarray(obs, np.float32))[None]}
            out = self.module.forward_inference(batch)
            dist = self._dist_cls.from_logits(out[Columns.ACTION_DIST_INPUTS])
            if self._deterministic:
                dist = dist.to_deterministic()
            action = dist.sample()[0].cpu().numpy()
        return unsquash(action, self._space)

    def seed(self, seed: int) -> None:
        self._torch.manual_seed(seed)


def unsquash(action: np.ndarray, space: gym.Space) -> np.ndarray:
    """Map a normalised action in [-1, 1] onto a Box's bounds (clipped first); dtype of the Box.

    Unbounded Boxes are returned unchanged (cast to their dtype).
    """
    action = np.asarray(action, dtype=np.float64).reshape(space.shape)
    if isinstance(space, gym.spaces.Box) and space.is_bounded():
        low, high = space.low.astype(np.float64), space.high.astype(np.float64)
        action = low + (np.clip(action, -1.0, 1.0) + 1.0) * (high - low) / 2.0
        action = np.clip(action, low, high)
    return action.astype(space.dtype)


def find_module_checkpoint(path: str | Path, module_id: str = DEFAULT_MODULE_ID) -> Path:
    """The RLModule checkpoint directory inside an Algorithm checkpoint (or ``path`` itself).

    Accepted: an RLModule checkpoint, a MultiRLModule checkpoint
    (``<...>/rl_module``, holding ``<module_id>/``), or an Algorithm checkpoint
    (``<ckpt>/learner_group/learner/rl_module/<module_id>``).
    """
    root = Path(path)
    if not root.is_dir():
        raise ConfigError(
            f"policy '{path}' is neither 'random' nor an existing checkpoint directory; pass "
            "'random' or the directory written by Algorithm.save_to_path()"
        )
    for candidate in (root / ALGORITHM_MODULE_SUBDIR / module_id, root / module_id, root):
        if _is_module_checkpoint(candidate):
            return candidate
    raise ConfigError(
        f"no RLModule '{module_id}' found in checkpoint '{path}' (looked for "
        f"{ALGORITHM_MODULE_SUBDIR / module_id}); pass an RLlib Algorithm or RLModule checkpoint"
    )


def _is_module_checkpoint(directory: Path) -> bool:
    metadata = directory / _CHECKPOINT_METADATA
    if not metadata.is_file():
        return False
    try:
        return json.loads(metadata.read_text()).get(_STATE_FILE_KEY) == _MODULE_STATE_FILE
    except (OSError, ValueError, AttributeError):
        return False


def make_policy(
    policy: str,
    env: gym.Env,
    seed: int = 0,
    deterministic: bool = True,
    bolus_noise: float | None = None,
) -> RandomPolicy | OraclePolicy | BasalBolusPolicy | CheckpointPolicy:
    """``"random"``, ``"oracle"`` (treatment envs only), ``"basal-bolus"`` (glucose env only,
    with its noise ``bolus_noise``, default 0) or a checkpoint directory."""
    if policy == BASAL_BOLUS:
        return BasalBolusPolicy(env, 0.0 if bolus_noise is None else bolus_noise, seed)
    if bolus_noise is not None:
        raise ConfigError(
            f"`bolus_noise` (--bolus-noise) is the noise of the '{BASAL_BOLUS}' policy; policy "
            f"'{policy}' takes none; drop it or use --policy {BASAL_BOLUS}"
        )
    if policy == RANDOM:
        return RandomPolicy(env.action_space, seed)
    if policy == ORACLE:
        if not hasattr(env.unwrapped, "myopic_oracle_action"):
            raise ConfigError(
                f"policy 'oracle' needs an env with a safety oracle (the treatment simulator); "
                f"'{env.spec.id if env.spec else env}' has none; use 'random' or a checkpoint"
            )
        return OraclePolicy()
    return CheckpointPolicy(policy, env, deterministic=deterministic, seed=seed)
