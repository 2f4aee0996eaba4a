"""The multi-objective search: an Optuna study over a space under hard budgets."""
