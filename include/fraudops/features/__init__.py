"""The Feast feature repository of fraudops.

* :mod:`fraudops.features.definitions` -- entities, sources, feature views and the
  versioned feature service, built from :mod:`fraudops.schema`;
* :mod:`fraudops.features.config` -- ``feature_store.yaml`` per profile, from the
  templates in ``repo/``;
* :mod:`fraudops.features.store` -- export, apply, materialize, training sets and
  online card lookups (``CardFeatureReader`` for the predictor).

Importing this package imports no Feast: that happens inside the functions.
"""
