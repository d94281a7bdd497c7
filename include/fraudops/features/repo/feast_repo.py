"""Entry point for the plain ``feast`` CLI (copied next to the generated feature_store.yaml).

``feast -c $FRAUDOPS_HOME/feature_repo plan`` (or ``apply``, ``ui``...) scans this module
for Feast objects; they are the ones ``fraudops features apply`` registers, built from the
feature schema and the settings of the environment (FRAUDOPS_*), so both tools agree.
"""

from fraudops.features.definitions import build_repo
from fraudops.settings import get_settings

_repo = build_repo(get_settings())

card = _repo.card
transaction = _repo.transaction
card_features_source = _repo.card_source
transaction_features_source = _repo.transaction_source
card_profile = _repo.card_profile
transaction_features = _repo.transaction_features
feature_service = _repo.feature_service
