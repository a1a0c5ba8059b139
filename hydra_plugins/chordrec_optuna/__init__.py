"""chordrec's Hydra sweeper on current Optuna (``hydra/sweeper=optuna``): see
:mod:`hydra_plugins.chordrec_optuna.optuna_sweeper`."""
