"""Monitoring: reference profiles, drift, late-label quality, alerts, retraining and canary policy.

Nothing here imports Evidently, Airflow or the model code at module level: the drift job
needs only NumPy/PyArrow and the champion's reference profile.
"""
