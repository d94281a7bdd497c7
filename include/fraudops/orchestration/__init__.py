"""Airflow glue: what the DAGs in ``dags/`` share, and how Airflow runs on the embedded default.

The DAG files only wire tasks; the logic lives in the rest of the package and is
imported inside the tasks. What a DAG file needs while it is parsed lives here, in
modules that import nothing but the standard library and ``airflow.sdk`` at their top
level (the dag-processor parses every file every few seconds; torch, pandas, mlflow,
feast, great_expectations and evidently load only when a task runs):

* :mod:`~fraudops.orchestration.policy`: owner, retries, start date, tags of every DAG;
* :mod:`~fraudops.orchestration.assets`: the assets DAGs hand work to each other with;
* :mod:`~fraudops.orchestration.runtime`: the training runtime switch (a local process,
  or a GPU pod through ``KubernetesPodOperator``), one command for both;
* :mod:`~fraudops.orchestration.links`: the operator extra link to the MLflow run, and
  the URLs of the MLflow UI and the predictor.

Not parse-time code: :mod:`~fraudops.orchestration.bootstrap` (the embedded Airflow
home, metadata database and login) and :mod:`~fraudops.orchestration.runs` (running DAGs
with ``airflow dags test`` and reading their results back), used by ``fraudops airflow``.
"""
