"""The search: plan (inert data), space, ports, records, settings, the accuracy rule, the
Optuna loop and its storage. Imports no torch and no mlflow."""
