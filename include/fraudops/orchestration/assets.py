"""The assets through which the fraudops DAGs hand work to each other (no polling).

* :data:`ONLINE_FEATURES`: updated by ``fraud_feature_materialization`` each time an
  interval lands in the online store; the event's ``extra`` holds the interval. Training
  records the newest event it saw; a deployment that wants training to wait for fresh
  features schedules ``fraud_training`` on it.
* :data:`CHALLENGER`: updated by ``fraud_training`` when a new version became the
  challenger (or the first champion); ``extra`` holds the model name and version, its run,
  its bundle and the alias it took. ``fraud_canary_rollout`` is scheduled on it.
* :data:`DRIFT_RESULTS`: updated by ``fraud_drift_monitoring`` each day it writes results.
* :data:`RETRAIN_REQUESTS`: updated by ``fraud_drift_monitoring`` each time drift triggered
  ``fraud_training``; its asset state keeps ``last_triggered_at``, which the retraining
  cooldown reads.

Parse-time module: standard library and ``airflow.sdk`` only.
"""

from __future__ import annotations

from airflow.sdk import Asset

ONLINE_FEATURES = Asset(name="fraud_online_features", uri="fraudops://features/card_profile/online")
CHALLENGER = Asset(name="fraud_model_challenger", uri="fraudops://registry/challenger")
DRIFT_RESULTS = Asset(name="fraud_drift_results", uri="fraudops://monitoring/drift")
RETRAIN_REQUESTS = Asset(name="fraud_retrain_requests", uri="fraudops://monitoring/retrain-requests")
