"""Baselines on FtTPO's data: RLlib's BC, MARWIL, IQL and CQL on the same episodes.

- :mod:`~fttpo_ray.algorithms.baselines.builtin_offline`: points an RLlib config at a dataset
  and its split (:func:`~fttpo_ray.algorithms.baselines.builtin_offline.
  configure_builtin_offline`), held in memory by the transition table every algorithm shares
  (:mod:`fttpo_ray.algorithms.offline_data`).
- :mod:`~fttpo_ray.algorithms.baselines.lean_iql`, :mod:`~fttpo_ray.algorithms.baselines.
  lean_cql`: RLlib's IQL and CQL losses on the papers' critics, targets moved every step.
- :mod:`~fttpo_ray.algorithms.baselines.lean_parts`: what the two lean learners share.
"""
