"""The search: plan (inert data), space, ports, records, settings, the accuracy rule, the
Optuna loop, its storage, history and progress log. Imports no torch and no mlflow."""
