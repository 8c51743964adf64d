"""The variants of FtTPO, one row each: FtTPO and its baselines (docs/algorithm.md §2–§3).

Every choice that differs between variants is a field of :class:`VariantSpec`, and every module
that depends on the variant reads the spec, never the variant's name: the RLModule (which heads
exist, what the thin head sees detached, which policy acts), the learner (which losses train
which policy, which parameters each optimizer owns, which policy draws the critic's and the value
net's target actions), the algorithm's config (which variants take a safety certificate) and the
evaluation (which policies are evaluated). A new baseline is one row of :data:`VARIANTS` and,
when it trains the thin policy in a new way, one :class:`ThinLoss` member with its loss function
in the learner's ``THIN_LOSSES``.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from fttpo_ray.errors import ConfigError

# Variant names (the values of ``FtTPOConfig.variant``).
VARIANT_FTTPO = "fttpo"
VARIANT_RAR = "rar"
VARIANT_REVERSE_KL = "reverse_kl"
VARIANT_FAT_ONLY = "fat_only"
DEFAULT_VARIANT = VARIANT_FTTPO


class Policy(enum.Enum):
    """The two policies of the module: the fat (full-support) proposal and the thin policy."""

    FAT = "fat"
    THIN = "thin"


class ThinLoss(enum.Enum):
    """How the thin policy is trained; the learner maps each member to its loss function."""

    #: Reverse KL from the thin policy to the frozen fat proposal (docs/algorithm.md §2 step 4).
    FAT_TO_THIN_KL = "fat_to_thin_kl"
    #: Advantage-weighted likelihood of dataset actions, uncovered ones replaced by the nearest
    #: thin sample (random action replacement, docs/algorithm.md §3).
    RANDOM_ACTION_REPLACEMENT = "random_action_replacement"
    #: Reverse KL to the Boltzmann distribution ``exp(Q/tau)/Z`` (docs/algorithm.md §3).
    BOLTZMANN_REVERSE_KL = "boltzmann_reverse_kl"


@dataclass(frozen=True)
class VariantSpec:
    """What one variant is made of.

    - ``name``: the variant's name (``FtTPOConfig.variant``).
    - ``acting_policy``: the policy that acts (env runners, the reported result).
    - ``has_fat``: a fat proposal exists (its scale head), trained by the advantage-weighted
      likelihood of dataset actions (docs/algorithm.md §2 step 3).
    - ``thin_loss``: the loss that trains the thin policy; ``None``: there is no thin policy.
    - ``thin_detached``: the thin half-width head reads the policy torso's features and the
      location detached, and the thin optimizer owns only the thin head (and its own torso):
      the thin loss never moves the location, which the fat loss trains. Otherwise the thin
      optimizer owns the policy torso and location head too.
    """

    name: str
    acting_policy: Policy
    has_fat: bool
    thin_loss: ThinLoss | None
    thin_detached: bool

    def __post_init__(self) -> None:
        if self.acting_policy is Policy.FAT and not self.has_fat:
            raise ValueError(f"variant {self.name!r}: the fat policy acts but there is none")
        if self.acting_policy is Policy.THIN and not self.has_thin:
            raise ValueError(f"variant {self.name!r}: the thin policy acts but there is none")
        if self.thin_detached and not (self.has_thin and self.has_fat):
            raise ValueError(
                f"variant {self.name!r}: a detached thin head needs a thin policy and a fat "
                "proposal (whose loss trains the shared location)"
            )

    @property
    def has_thin(self) -> bool:
        """A thin policy exists (its half-width head)."""
        return self.thin_loss is not None

    @property
    def proposal(self) -> Policy:
        """The policy that draws the critic target's next action ``a'`` (docs/algorithm.md §2
        step 2): the fat proposal, or the thin policy where there is none."""
        return Policy.FAT if self.has_fat else Policy.THIN

    @property
    def fat_on_learner_only(self) -> bool:
        """The fat scale head exists but does not act, so the inference-only module (env
        runners) goes without it."""
        return self.has_fat and self.acting_policy is not Policy.FAT


#: Variant name -> spec, in the order the docs and error messages list them.
VARIANTS: Mapping[str, VariantSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            VariantSpec(
                name=VARIANT_FTTPO,
                acting_policy=Policy.THIN,
                has_fat=True,
                thin_loss=ThinLoss.FAT_TO_THIN_KL,
                thin_detached=True,
            ),
            VariantSpec(
                name=VARIANT_RAR,
                acting_policy=Policy.THIN,
                has_fat=False,
                thin_loss=ThinLoss.RANDOM_ACTION_REPLACEMENT,
                thin_detached=False,
            ),
            VariantSpec(
                name=VARIANT_REVERSE_KL,
                acting_policy=Policy.THIN,
                has_fat=False,
                thin_loss=ThinLoss.BOLTZMANN_REVERSE_KL,
                thin_detached=False,
            ),
            VariantSpec(
                name=VARIANT_FAT_ONLY,
                acting_policy=Policy.FAT,
                has_fat=True,
                thin_loss=None,
                thin_detached=False,
            ),
        )
    }
)


def variant_spec(name: object) -> VariantSpec:
    """The spec of variant ``name``; :class:`ConfigError` naming the variants if it is none."""
    if not isinstance(name, str) or name not in VARIANTS:
        raise ConfigError(f"`variant` must be one of {', '.join(VARIANTS)}; got {name!r}")
    return VARIANTS[name]


def variants_acting(policy: Policy) -> tuple[str, ...]:
    """The names of the variants in which ``policy`` acts, in table order."""
    return tuple(name for name, spec in VARIANTS.items() if spec.acting_policy is policy)
