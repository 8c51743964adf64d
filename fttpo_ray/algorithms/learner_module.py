"""The learner's RLModule of any RLlib algorithm, whether its learner is local or remote.

The learner holds the full module: every network, including the learner-only parts that the
inference-only module of the env runners lacks (FtTPO's fat scale head, docs/algorithm.md §2;
the critics of RLlib's IQL or CQL). With a local learner (``num_learners=0``) that module lives
in this process; with remote learners (``num_learners >= 1``) it lives in Ray actors, and
``LearnerGroup`` has no local learner at all. :func:`learner_module` gives the module in both
cases through RLlib's public API, and every part of the package that needs the learner's module
(evaluation, ``fttpo eval``, ``FtTPO.get_module``, the benchmarks) goes through it.
"""

from __future__ import annotations

from typing import Any

from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.core.learner.learner import Learner
from ray.rllib.core.rl_module.rl_module import RLModule, RLModuleSpec
from ray.rllib.utils.actor_manager import RemoteCallResults


def _first_result(results: RemoteCallResults) -> Any:
    """The first learner's answer; a learner's error is raised here."""
    result = next(iter(results))
    if not result.ok:
        raise result.get()
    return result.get()


def _module(learner: Learner, module_id: str) -> RLModule:
    return learner.module[module_id].unwrapped()


def _module_spec(learner: Learner, module_id: str) -> RLModuleSpec:
    return RLModuleSpec.from_module(_module(learner, module_id))


def learner_module(algorithm: Any, module_id: str = DEFAULT_MODULE_ID) -> RLModule:
    """The full (not inference-only) RLModule ``module_id`` of ``algorithm``'s learner.

    - Local learner: the learner's own module, the object that trains (no copy).
    - Remote learners: a module built in this process from the spec of the first learner's
      module (``RLModuleSpec.from_module``, so the same class, spaces and model config) and
      loaded with the learner's current weights (``LearnerGroup.get_weights``). It is a
      snapshot: call again after training to see newer weights.
    """
    group = algorithm.learner_group
    if group.is_local:
        return _first_result(group.foreach_learner(_module, module_id=module_id))
    spec = _first_result(group.foreach_learner(_module_spec, module_id=module_id))
    module = spec.build()
    module.set_state(group.get_weights(module_ids=[module_id])[module_id])
    return module
