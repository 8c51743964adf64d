"""Single runs: ``fttpo train`` trains one run of an experiment YAML (:mod:`.train`),
``fttpo eval`` evaluates one algorithm checkpoint (:mod:`.evaluate`).

A layer above :mod:`fttpo_ray.tuning`: a single run reads the same experiment YAML, checks its
config the same way, starts the same local Ray and tracks to the same MLflow store as a sweep,
but builds and trains its algorithm directly, without Tune.
"""
