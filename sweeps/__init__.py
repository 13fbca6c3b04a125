"""The sweep harness: Optuna studies over the vicreg trainer, tracked in MLflow."""
