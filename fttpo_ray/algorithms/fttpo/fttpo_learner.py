"""Framework-independent part of the FtTPO learner: names of optimizers, batch columns, metrics.

Key contract (RLlib pairs optimizer ``X`` with the loss ``X_loss`` when losses are kept per
optimizer; we keep the same naming so logs and checkpoints read the same way):

============  ==========================================  ===============  ===================
optimizer     parameters                                  loss key         learning rate
============  ==========================================  ===============  ===================
``critic``    the critic ensemble Q_1..Q_E                ``critic_loss``  ``critic_lr``
``value``     V                                           ``value_loss``   ``value_lr``
``fat``       policy torso, location head, fat scale      ``fat_loss``     ``actor_lr``
``thin``      thin half-width head (+ its own torso);     ``thin_loss``    ``actor_lr``
              for ``rar``/``reverse_kl`` also torso and
              location head (the thin policy is trained
              directly)
============  ==========================================  ===============  ===================

The ``fat_only`` variant has no ``thin`` optimizer; ``rar`` and ``reverse_kl`` have no ``fat``.
Every optimizer is ``torch.optim.Adam(fused=True)``: one kernel per optimizer step.
"""

from __future__ import annotations

from ray.rllib.core.learner.learner import Learner

from fttpo_ray.metrics import CRITIC_LOSS, FAT_LOSS, THIN_LOSS, VALUE_LOSS

# Optimizer names.
CRITIC = "critic"
VALUE = "value"
FAT = "fat"
THIN = "thin"

# Loss keys (``<optimizer>_loss``), as logged.
LOSS_KEYS = {CRITIC: CRITIC_LOSS, VALUE: VALUE_LOSS, FAT: FAT_LOSS, THIN: THIN_LOSS}

# Diagnostics logged by the learner (per module), besides the losses.
Q_MEAN = "q_mean"
V_MEAN = "v_mean"
TD_TARGET_MEAN = "td_target_mean"
ADVANTAGE_MEAN = "advantage_mean"
WEIGHT_MEAN = "advantage_weight_mean"
WEIGHT_TRUNCATED_FRAC = "advantage_weight_truncated_frac"
THIN_HALFWIDTH_MEAN = "thin_halfwidth_mean"
FAT_SCALE_MEAN = "fat_scale_mean"
RAR_REPLACED_FRAC = "rar_replaced_frac"
GRAD_STEPS = "grad_steps"


class FtTPOLearner(Learner):
    """Base learner of FtTPO; the torch implementation is in ``torch/fttpo_torch_learner.py``."""
