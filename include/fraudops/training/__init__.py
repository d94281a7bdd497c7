"""Training: data loading and time-ordered splits, scaling, the model, the training loop
(Hugging Face Accelerate), threshold tuning, evaluation, plots and MLflow tracking.

Nothing here is imported by the package at import time: torch, mlflow, sklearn and
matplotlib load inside the functions that need them.
"""
