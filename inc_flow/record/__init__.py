"""The MLflow record: names (keys), tracking a study, fetching runs, report rows, plots."""
