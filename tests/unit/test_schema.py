from fraudops import schema


def test_names_unique_and_count_derived() -> None:
    assert len(schema.FEATURE_NAMES) == schema.N_FEATURES == len(set(schema.FEATURE_NAMES))
    assert schema.FEATURE_INDEX[schema.FEATURE_NAMES[-1]] == schema.N_FEATURES - 1


def test_levels_partition_the_features() -> None:
    assert set(schema.CARD_FEATURE_NAMES) | set(schema.TRANSACTION_FEATURE_NAMES) == set(schema.FEATURE_NAMES)
    assert not set(schema.CARD_FEATURE_NAMES) & set(schema.TRANSACTION_FEATURE_NAMES)
    assert all(name.startswith("card_") for name in schema.CARD_FEATURE_NAMES)


def test_unknown_feature_is_named_in_the_error() -> None:
    import pytest

    with pytest.raises(KeyError, match="no_such_feature"):
        schema.feature("no_such_feature")
