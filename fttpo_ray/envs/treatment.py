"""Treatment simulator of docs/algorithm.md §4 (Li et al. 2023, as used by FtTPO, ICLR 2025 §5)
with the safety oracle of docs/algorithm.md §5.

Dynamics (hidden mean ``mu`` in R^8, per-episode covariance ``C``, dose ``a`` in [-1, 1]):

- reset: ``mu ~ U(-1, 1)^8``; ``C = corrcoef(columns of U(0, 1)^{8x8}) / 2``; ``s ~ N(mu, C)``.
- step: ``mu'[0:4] = tanh(a + mu[0:4])``, ``mu'[4:8] = tanh(-a + mu[4:8])``, ``s' ~ N(mu', C)``,
  ``r = -exp((s'0 + s'4) / 2) a^2 + 2 (s'1 + s'2 + s'5 + s'6 + 0.5) a + s'3 + s'7``.

The episode never terminates and is truncated by the environment itself after ``horizon`` (24)
steps. The discount 0.9 of the paper is a training setting, not a property of the environment.
The displayed dose is ``100 a`` (``info["dose"]``). The lethal variant (ours) ends the episode
(``terminated=True``) with reward ``lethal_penalty`` (-100) when ``|a| > lethal_threshold``
(0.9); the next state is still drawn from the dynamics so that every transition is well formed.

Sampling from ``N(mu, C)``: ``C`` is the correlation matrix of 8 samples of 8 variables, so its
rank is at most 7 and it is always singular; a Cholesky factor does not exist. We factor it once
per episode with the symmetric eigen-decomposition ``C = V diag(w) V^T``, clip the eigenvalues
at 0 (round-off makes the null eigenvalue ``~ -1e-17``) and draw ``s = mu + V diag(sqrt(w)) z``
with ``z ~ N(0, I)``, which has covariance exactly ``C`` for any PSD ``C``.

Actions outside [-1, 1] are clipped before they act, and the oracle evaluates doses the same way.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium.error import ResetNeeded

from fttpo_ray.envs.actions import action_vector
from fttpo_ray.errors import ConfigError, NonFiniteError

#: Dimension of the observed state and of the hidden mean.
STATE_DIM = 8
#: Episode length (truncation) of the paper.
DEFAULT_HORIZON = 24
#: Doses with ``|a|`` above this end the episode in the lethal variant.
DEFAULT_LETHAL_THRESHOLD = 0.9
#: Reward of a lethal dose.
DEFAULT_LETHAL_PENALTY = -100.0
#: Displayed dose = ``DOSE_SCALE * a``.
DOSE_SCALE = 100.0
#: Points of the dose grid searched by :meth:`TreatmentSimEnv.myopic_oracle_action`.
ORACLE_GRID_POINTS = 401
#: Local refinement rounds (each a grid of ``ORACLE_REFINE_POINTS`` around the incumbent).
ORACLE_REFINE_ROUNDS = 3
ORACLE_REFINE_POINTS = 41

#: ``info`` keys returned by :meth:`TreatmentSimEnv.step`.
INFO_DOSE = "dose"
INFO_PROHIBITED = "prohibited"
INFO_LETHAL = "lethal"


def treatment_reward(actions: np.ndarray, next_states: np.ndarray) -> np.ndarray:
    """Reward (docs/algorithm.md §4) of doses ``actions`` ``(N,)`` and next states ``(N, 8)``.

    ``r = -exp((s'0 + s'4)/2) a^2 + 2 (s'1 + s'2 + s'5 + s'6 + 0.5) a + s'3 + s'7``.
    """
    a = np.asarray(actions, dtype=np.float64)
    s = np.asarray(next_states, dtype=np.float64)
    toxicity = np.exp(0.5 * (s[..., 0] + s[..., 4]))
    benefit = 2.0 * (s[..., 1] + s[..., 2] + s[..., 5] + s[..., 6] + 0.5)
    return -toxicity * a**2 + benefit * a + s[..., 3] + s[..., 7]


#: ``mu'[0:4] = tanh(a + mu[0:4])``, ``mu'[4:8] = tanh(-a + mu[4:8])``.
_DOSE_SIGN = np.concatenate([np.ones(STATE_DIM // 2), -np.ones(STATE_DIM // 2)])


def next_hidden_mean(mu: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """``mu'(a)`` for each dose: shape ``(N, 8)`` from ``mu`` ``(8,)`` (or one per dose,
    ``(N, 8)``) and ``actions`` ``(N,)``."""
    a = np.asarray(actions, dtype=np.float64)[:, None]
    return np.tanh(_DOSE_SIGN * a + np.asarray(mu, dtype=np.float64))


def expected_reward_at(mu: np.ndarray, cov: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """``r̄(a) = E[r | mu, C, a]`` (closed form, see :meth:`TreatmentSimEnv.expected_reward`).

    ``mu`` is one hidden mean ``(8,)`` or one per dose ``(N, 8)``; ``actions`` ``(N,)`` are
    clipped to [-1, 1]. Shape ``(N,)``, float64.
    """
    a = np.clip(np.asarray(actions, dtype=np.float64), -1.0, 1.0)
    m = next_hidden_mean(mu, a)
    log_toxicity = 0.5 * (m[:, 0] + m[:, 4]) + 0.125 * (cov[0, 0] + cov[4, 4] + 2.0 * cov[0, 4])
    benefit = 2.0 * (m[:, 1] + m[:, 2] + m[:, 5] + m[:, 6] + 0.5)
    return -np.exp(log_toxicity) * a**2 + benefit * a + m[:, 3] + m[:, 7]


def psd_factor(cov: np.ndarray) -> np.ndarray:
    """A matrix ``L`` with ``L L^T = cov`` for a symmetric PSD, possibly singular, ``cov``.

    Eigen-decomposition with eigenvalues clipped at 0 (see the module docstring).
    """
    eigenvalues, eigenvectors = np.linalg.eigh(cov)
    return eigenvectors * np.sqrt(np.clip(eigenvalues, 0.0, None))[None, :]


class TreatmentSimEnv(gym.Env[np.ndarray, np.ndarray]):
    """The treatment simulator (docs/algorithm.md §4) and its safety oracle (§5).

    Args:
        lethal: the lethal variant (``fttpo/TreatmentSimLethal-v0``): ``|a| > lethal_threshold``
            ends the episode with reward ``lethal_penalty``.
        lethal_threshold: dose magnitude above which a dose is lethal (lethal variant only;
            default 0.9).
        lethal_penalty: reward of a lethal dose (lethal variant only; default -100).
        prohibited_delta: default ``delta >= 0`` of :meth:`prohibited`.
        horizon: episode length before truncation (default 24).
        render_mode: only ``None`` (no rendering).

    Oracle (all at the *current* state, vectorised over candidate doses, numpy in and out):
    :meth:`expected_reward`, :meth:`prohibited`, :meth:`myopic_oracle_action`, and the
    read-only properties :attr:`hidden_state` and :attr:`covariance`.
    """

    metadata = {"render_modes": []}

    def __init__(
        self,
        *,
        lethal: bool = False,
        lethal_threshold: float | None = None,
        lethal_penalty: float | None = None,
        prohibited_delta: float = 0.0,
        horizon: int = DEFAULT_HORIZON,
        render_mode: str | None = None,
    ) -> None:
        if not lethal and (lethal_threshold is not None or lethal_penalty is not None):
            raise ConfigError(
                "`lethal_threshold`/`lethal_penalty` apply only to the lethal variant; make "
                "'fttpo/TreatmentSimLethal-v0' instead of 'fttpo/TreatmentSim-v0'"
            )
        threshold = DEFAULT_LETHAL_THRESHOLD if lethal_threshold is None else lethal_threshold
        penalty = DEFAULT_LETHAL_PENALTY if lethal_penalty is None else lethal_penalty
        if not (isinstance(threshold, numbers.Real) and 0.0 < threshold <= 1.0):
            raise ConfigError(f"`lethal_threshold` must be in (0, 1]; got {threshold!r}")
        if not (isinstance(penalty, numbers.Real) and math.isfinite(penalty)):
            raise ConfigError(f"`lethal_penalty` must be a finite number; got {penalty!r}")
        if not (isinstance(prohibited_delta, numbers.Real) and prohibited_delta >= 0.0):
            raise ConfigError(f"`prohibited_delta` must be >= 0; got {prohibited_delta!r}")
        if not (isinstance(horizon, numbers.Integral) and horizon >= 1):
            raise ConfigError(f"`horizon` must be an integer >= 1; got {horizon!r}")
        if render_mode is not None:
            raise ConfigError(
                f"the treatment simulator does not render; got render_mode={render_mode!r}, "
                "pass None"
            )
        self.lethal = bool(lethal)
        self.lethal_threshold = float(threshold)
        self.lethal_penalty = float(penalty)
        self.prohibited_delta = float(prohibited_delta)
        self.horizon = horizon
        self.render_mode = render_mode
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (STATE_DIM,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self._mu: np.ndarray | None = None
        self._cov: np.ndarray | None = None
        self._factor: np.ndarray | None = None
        self._t = 0

    # ------------------------------------------------------------------ gymnasium API
    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        rng = self.np_random
        self._mu = rng.uniform(-1.0, 1.0, STATE_DIM)
        self._cov = np.corrcoef(rng.uniform(0.0, 1.0, (STATE_DIM, STATE_DIM)), rowvar=False) / 2.0
        self._factor = psd_factor(self._cov)
        self._t = 0
        return self._draw(self._mu).astype(np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        mu = self._current_mean()
        raw = float(np.asarray(action, dtype=np.float64).reshape(-1)[0])
        if not math.isfinite(raw):
            raise NonFiniteError(f"the dose must be finite; got {raw}; check the policy output")
        a = min(max(raw, -1.0), 1.0)
        was_prohibited = bool(self.prohibited([a])[0])
        new_mu = next_hidden_mean(mu, np.array([a]))[0]
        next_state = self._draw(new_mu)
        died = self.lethal and abs(a) > self.lethal_threshold
        reward = self.lethal_penalty if died else float(treatment_reward(a, next_state))
        self._mu = new_mu
        self._t += 1
        truncated = not died and self._t >= self.horizon
        info = {INFO_DOSE: DOSE_SCALE * a, INFO_PROHIBITED: was_prohibited, INFO_LETHAL: died}
        return next_state.astype(np.float32), reward, died, truncated, info

    # ------------------------------------------------------------------ safety oracle
    @property
    def hidden_state(self) -> np.ndarray:
        """The current hidden mean ``mu`` (a read-only copy, shape ``(8,)``)."""
        return self._read_only(self._current_mean())

    @property
    def covariance(self) -> np.ndarray:
        """This episode's covariance ``C`` (a read-only copy, shape ``(8, 8)``)."""
        self._current_mean()
        return self._read_only(self._cov)

    def expected_reward(self, actions: Any) -> np.ndarray:
        """``r̄(a) = E[r | s, a]`` at the current state for each candidate dose (closed form).

        ``r̄(a) = -exp(½(m0+m4) + ⅛(C00+C44+2C04)) a² + 2(m1+m2+m5+m6+0.5) a + m3 + m7`` with
        ``m = mu'(a)``: the log-normal mean of the toxicity term plus the linear terms' means.
        Doses are clipped to [-1, 1] first, as the environment does. Shape ``(N,)``, float64.
        (In the lethal variant a lethal dose's actual reward is the penalty, not ``r̄``.)
        """
        return expected_reward_at(
            self._current_mean(), self._cov, action_vector(actions, what="doses")
        )

    def prohibited(self, actions: Any, delta: float | None = None) -> np.ndarray:
        """Which candidate doses are prohibited at the current state (bool, shape ``(N,)``).

        ``r̄(a) < r̄(0) - delta`` (worse than no treatment by more than ``delta``; default the
        ``prohibited_delta`` given at make time) or, in the lethal variant, ``|a| > threshold``.
        """
        return self._evaluate(action_vector(actions, what="doses"), delta)[1]

    def myopic_oracle_action(self) -> np.ndarray:
        """The allowed dose with the highest ``r̄`` at the current state, shape ``(1,)`` float32.

        A grid of ``ORACLE_GRID_POINTS`` doses over the allowed range, then
        ``ORACLE_REFINE_ROUNDS`` finer grids around the best one. Only doses that are allowed
        *after* rounding to float32 are candidates; ``a = 0`` is always allowed, so one exists.
        """
        high = self.lethal_threshold if self.lethal else 1.0
        best, step = 0.0, 2.0 * high / (ORACLE_GRID_POINTS - 1)
        candidates = np.linspace(-high, high, ORACLE_GRID_POINTS)
        for _ in range(ORACLE_REFINE_ROUNDS + 1):
            candidates = np.append(candidates, best).astype(np.float32).astype(np.float64)
            values, bad = self._evaluate(candidates, None)
            best = float(candidates[int(np.argmax(np.where(bad, -np.inf, values)))])
            candidates = np.linspace(
                max(best - step, -high), min(best + step, high), ORACLE_REFINE_POINTS
            )
            step = step * 2.0 / (ORACLE_REFINE_POINTS - 1)
        return np.array([best], dtype=np.float32)

    def _evaluate(self, doses: np.ndarray, delta: float | None) -> tuple[np.ndarray, np.ndarray]:
        """``(r̄(doses), prohibited(doses))`` with one evaluation of ``r̄`` (``0`` appended)."""
        delta = self.prohibited_delta if delta is None else float(delta)
        values = self.expected_reward(np.append(doses, 0.0))
        bad = values[:-1] < values[-1] - delta
        if self.lethal:
            bad |= np.abs(np.clip(doses, -1.0, 1.0)) > self.lethal_threshold
        return values[:-1], bad

    # ------------------------------------------------------------------ helpers
    def _current_mean(self) -> np.ndarray:
        if self._mu is None:
            raise ResetNeeded("call reset() before using the treatment simulator or its oracle")
        return self._mu

    def _draw(self, mean: np.ndarray) -> np.ndarray:
        return mean + self._factor @ self.np_random.standard_normal(STATE_DIM)

    @staticmethod
    def _read_only(array: np.ndarray) -> np.ndarray:
        copy = np.array(array, dtype=np.float64)
        copy.flags.writeable = False
        return copy
