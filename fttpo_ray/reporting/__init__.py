"""Reports of experiments from MLflow (``fttpo report``, and the report at the end of
``fttpo sweep``): results tables (:mod:`.report`, :mod:`.results`, :mod:`.columns`), plots
(:mod:`.plots`, :mod:`.densities`), reference rows and the return/violation frontier
(:mod:`.references`, :mod:`.frontier`); MLflow's dashboard as a person sees it, in headless
Chromium (:mod:`.dashboard`), and a local ``mlflow server`` to show it (:mod:`.mlflow_server`).

A layer above :mod:`fttpo_ray.tuning`: it reads what the sweeps tracked (through
:mod:`fttpo_ray.tuning.tracking`) and names an algorithm's hyper-parameters only through the
algorithm's report vocabulary (:func:`fttpo_ray.tuning.trainables.report_vocabulary`); nothing
in tuning imports it.
"""
