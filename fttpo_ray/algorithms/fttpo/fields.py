"""FtTPO's settings as a declarative table: each field's type, valid range and error message.

:data:`FIELDS` maps a field of :class:`~fttpo_ray.algorithms.fttpo.fttpo.FtTPOConfig` to its
:class:`Field`; :func:`check_field` checks one value against it and raises
:class:`~fttpo_ray.errors.ConfigError` naming the field, the bad value and the valid range, in
one line. ``FtTPOConfig.validate`` checks every field of the table, then the few rules that
relate several fields (kept as an explicit list there).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from fttpo_ray.algorithms.fttpo.selection import CRITERIA
from fttpo_ray.errors import ConfigError
from fttpo_ray.rl_module.fttpo_rl_module import AGGREGATIONS, TORSO_OWN, TORSO_SHARED
from fttpo_ray.rl_module.variants import VARIANTS

#: Kinds of field (what :func:`check_field` tests before the range).
NUMBER = "number"
INTEGER = "integer"
FLAG = "flag"
CHOICE = "choice"
#: A pair ``(low, high)`` with ``0 < low < high``.
POSITIVE_PAIR = "positive_pair"
#: A non-empty list of integers >= 1 (layer widths).
WIDTHS = "widths"


@dataclass(frozen=True)
class Field:
    """One setting: its kind, its range and the words of its error message.

    The message reads ``` `name`<label> must be <range><why>; got <value> ```; ``low``/``high``
    bound a number or an integer (``low_open``/``high_open``: strict), ``choices`` list a
    choice's values, ``optional`` lets ``None`` through (unset).
    """

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    label: str = ""
    why: str = ""
    optional: bool = False

    def describe(self) -> str:
        """What a valid value is, as the error message says it (``in [1, 3)``, ``an integer >=
        1``, ``'shared' or 'own'``, ...)."""
        if self.kind == FLAG:
            return "true or false"
        if self.kind == CHOICE:
            if len(self.choices) == 1:
                return f"'{self.choices[0]}'"
            if len(self.choices) == 2:
                return f"'{self.choices[0]}' or '{self.choices[1]}'"
            return f"one of {', '.join(self.choices)}"
        if self.kind == POSITIVE_PAIR:
            return "a pair (low, high) with 0 < low < high"
        if self.kind == WIDTHS:
            return "a non-empty list of integers >= 1"
        bounds = self._range()
        return f"an integer {bounds}" if self.kind == INTEGER else bounds

    def _range(self) -> str:
        low, high = _text(self.low), _text(self.high)
        if self.low is not None and self.high is not None:
            opening, closing = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {opening}{low}, {high}{closing}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        if self.high is not None:
            return f"{'<' if self.high_open else '<='} {high}"
        return "finite"

    def in_range(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)


def _text(bound: float | None) -> str:
    if bound is None:
        return ""
    if float(bound).is_integer():
        return str(int(bound))
    return f"{bound:g}".replace("e-0", "e-").replace("e+0", "e+")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_field(name: str, field: Field, value: Any) -> None:
    """Raise :class:`ConfigError` unless ``value`` is valid for ``field`` (message: module
    docstring)."""

    def fail(shown: str) -> None:
        raise ConfigError(
            f"`{name}`{field.label} must be {field.describe()}{field.why}; got {shown}"
        )

    if value is None and field.optional:
        return
    if field.kind == NUMBER:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"`{name}`{field.label} must be a number; got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"`{name}`{field.label} must be finite; got {value}")
        if not field.in_range(value):
            fail(f"{value}")
    elif field.kind == INTEGER:
        if not _is_int(value) or not field.in_range(value):
            fail(f"{value!r}")
    elif field.kind == FLAG:
        if not isinstance(value, bool):
            fail(f"{value!r}")
    elif field.kind == CHOICE:
        if value not in field.choices:
            fail(f"{value!r}")
    elif field.kind == POSITIVE_PAIR:
        if (
            not isinstance(value, (tuple, list))
            or len(value) != 2
            or not all(isinstance(b, numbers.Real) and not isinstance(b, bool) for b in value)
            or not 0.0 < value[0] < value[1]
        ):
            fail(f"{value!r}")
    elif field.kind == WIDTHS:
        if (
            not isinstance(value, (list, tuple))
            or not value
            or not all(_is_int(w) and w >= 1 for w in value)
        ):
            fail(f"{value!r}")
    else:
        raise ValueError(f"unknown field kind {field.kind!r}")


_POSITIVE = Field(NUMBER, low=0.0, low_open=True)
_NON_NEGATIVE = Field(NUMBER, low=0.0)
_COUNT = Field(INTEGER, low=1)

#: Every checked field of ``FtTPOConfig`` (RLlib's own fields it relies on included).
FIELDS: Mapping[str, Field] = MappingProxyType(
    {
        "variant": Field(CHOICE, choices=tuple(VARIANTS)),
        "fat_q": Field(
            NUMBER,
            low=1.0,
            high=3.0,
            high_open=True,
            why=" for a heavy-tailed (fat) q-Gaussian (1 = Gaussian, 2 = Cauchy; q >= 3 is not "
            "normalisable)",
        ),
        "thin_q": Field(NUMBER, high=1.0, high_open=True, why=" for a sparse (thin) policy"),
        "kl_weight": Field(NUMBER, low=0.0, low_open=True, label=" (tau)"),
        "weight_q": Field(
            NUMBER, high=1.0, why=" (0: linear weights [1 + A/tau]_+, 1: exp(A/tau))"
        ),
        "w_max": Field(NUMBER, low=1e-8, low_open=True),
        "actor_lr": _POSITIVE,
        "critic_lr": _POSITIVE,
        "value_lr": _POSITIVE,
        "polyak": Field(NUMBER, low=0.0, high=1.0, low_open=True),
        "gamma": Field(NUMBER, low=0.0, high=1.0),
        "num_critics": _COUNT,
        "critic_aggregation": Field(CHOICE, choices=tuple(AGGREGATIONS)),
        "critic_kappa": _NON_NEGATIVE,
        "critic_layer_norm": Field(FLAG),
        "critic_weight_decay": _NON_NEGATIVE,
        "normalize_observations": Field(FLAG),
        "compile_update": Field(FLAG),
        "kl_num_samples": _COUNT,
        "kl_ratio_clip": Field(NUMBER, low=1.0, low_open=True),
        "rar_num_samples": _COUNT,
        "thin_halfwidth_bounds": Field(POSITIVE_PAIR),
        "fat_scale_bounds": Field(POSITIVE_PAIR),
        "thin_support_in_box": Field(FLAG),
        "thin_halfwidth_torso": Field(CHOICE, choices=(TORSO_SHARED, TORSO_OWN)),
        "num_gradient_steps_per_iteration": _COUNT,
        "train_batch_size_per_learner": _COUNT,
        "in_memory_max_transitions": _COUNT,
        # the dataset's split (``.dataset(...)``)
        "held_out_fraction": Field(NUMBER, low=0.0, high=1.0, high_open=True),
        "split_seed": Field(INTEGER, low=0),
        # ``.selection(...)``
        "selection_criterion": Field(CHOICE, choices=tuple(CRITERIA)),
        # ``.certificate(...)``
        "safety_certificate": Field(FLAG),
        "safe_action": Field(NUMBER),
        "certificate_alpha": Field(NUMBER, low=0.0, high=1.0, low_open=True, high_open=True),
        "certificate_members": Field(INTEGER, low=2),
        "certificate_hiddens": Field(WIDTHS),
        "certificate_grid_points": Field(INTEGER, low=2),
        # ``.evaluation(...)`` and ``.debugging(...)``
        "evaluation_seed": Field(INTEGER, low=0),
        "evaluation_explore": Field(FLAG),
        "evaluation_final_episodes": Field(INTEGER, low=1, optional=True),
        "evaluation_final_iteration": Field(INTEGER, low=1, optional=True),
        "evaluation_duration": _COUNT,
        "evaluation_duration_unit": Field(
            CHOICE, choices=("episodes",), why=" for FtTPO's evaluation"
        ),
        "seed": Field(INTEGER, low=0, optional=True),
    }
)


def check_fields(config: Any) -> None:
    """Check every field of :data:`FIELDS` on ``config`` (the first bad one raises)."""
    for name, field in FIELDS.items():
        check_field(name, field, getattr(config, name))
