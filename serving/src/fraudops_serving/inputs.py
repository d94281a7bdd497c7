"""Request bodies -> float32 rows, strictly, without per-field model validation.

The hot path parses JSON with orjson and reads the features of a transaction with one
C-level ``itemgetter`` over the manifest's names, then checks the value types in one
pass (``set(map(type, values))``), unless the body's text has no boolean in it: then
:mod:`struct`, which packs the row, refuses every other value that is not a number.
Every refusal is an :class:`InputError` with an HTTP status in the 4xx range, a
machine-readable code and a message that names the field.

Rules (the OpenAPI schema says the same):

* ``features`` is an object keyed by feature name (every name of the manifest, no
  other), or an array in the manifest's order with exactly ``n_features`` numbers;
* values are JSON numbers (not strings, booleans or null) that become finite float32s, i.e.
  of magnitude below ``FLT_OVERFLOW`` (JSON has no NaN or infinity, and orjson refuses
  numbers that overflow a double);
* when online features are on and the item has a ``card_id``, the online (card-level)
  features may be left out of an object: they are fetched from the online store. A
  missing online feature is marked NaN in the row until then;
* ``card_id`` is a 64-bit integer, ``transaction_id`` and ``request_id`` are strings of
  at most 128 characters; no other field is accepted.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import numpy as np

FLT_MAX = float(np.finfo(np.float32).max)
# The smallest number that float32 rounds to infinity, (2 - 2**-24) * 2**127: every number
# below it (3.4028235e38, float32's maximum as it prints, included) becomes a finite float32.
FLT_OVERFLOW = (2 - 2**-24) * 2.0**127
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_ID_LENGTH = 128
ITEM_FIELDS = frozenset({"features", "card_id", "transaction_id", "request_id"})
_pack_one = struct.Struct("=f").pack
_NUMBER_TYPES = frozenset({float, int})
_MISSING = object()
F32 = np.dtype(np.float32)  # a dtype object: np.frombuffer resolves it faster than the type
_JSON_TYPE = {str: "a string", bool: "a boolean", type(None): "null", list: "an array", dict: "an object"}


class InputError(Exception):
    """A request the predictor refuses; ``status`` is always 4xx."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def _json_type(value: Any) -> str:
    return _JSON_TYPE.get(type(value), type(value).__name__)


@dataclass(slots=True)
class Item:
    """One parsed transaction."""

    row: np.ndarray  # float32 [n_features], read-only; NaN where an online feature is to be fetched (writable then)
    card_id: int | None
    transaction_id: str | None
    request_id: str | None
    needs_online: bool


class RowParser:
    """Parses the ``features`` of a transaction for one list of feature names."""

    def __init__(self, feature_names: Sequence[str], online_names: Sequence[str] = (), *, online_enabled: bool = False):
        self.names = tuple(feature_names)
        self.n = len(self.names)
        self.index = {name: i for i, name in enumerate(self.names)}
        self._get = itemgetter(*self.names)
        self._pack = struct.Struct(f"={self.n}f").pack
        # Online features that this model reads, in model order.
        self.online_names = tuple(n for n in self.names if n in set(online_names))
        self.online_idx = np.array([self.index[n] for n in self.online_names], dtype=np.intp)
        self.online_enabled = online_enabled and bool(self.online_names)
        self._online_set = frozenset(self.online_names)

    # ------------------------------------------------------------------ values
    def _check_values(self, values: Sequence[Any], where: str, names: Sequence[str] | None = None) -> None:
        if not set(map(type, values)) <= _NUMBER_TYPES:
            for i, v in enumerate(values):
                if type(v) not in _NUMBER_TYPES:
                    label = repr(names[i]) if names is not None else f"#{i}"
                    raise InputError(
                        422, "invalid_value", f"{where}.features: feature {label} must be a number, got {_json_type(v)}"
                    )

    def _row(
        self, values: Sequence[Any], where: str, names: Sequence[str] | None = None, *, bools: bool = True
    ) -> np.ndarray:
        """Checked numbers -> a float32 row (read-only: a view of the packed bytes).

        The numbers are packed straight into float32 bytes by :mod:`struct` (one C call, a
        third of NumPy's conversion from a list; into a new ``bytes``, cheaper than into a
        new array), which refuses a string, null, array or object, and
        any number beyond float32's range (JSON has no NaN or infinity, and orjson refuses
        doubles that overflow): the refused row is then looked at value by value, to name
        the value. A boolean is the one JSON value :mod:`struct` takes for a number (as 0 or
        1), so the types are checked first unless the caller knows there is no boolean in
        the body (``bools=False``: no ``true`` or ``false`` in its text).
        """
        if bools:
            self._check_values(values, where, names)
        n = len(values)
        try:
            # (A row without its online features has fewer values: struct caches that format.)
            packed = self._pack(*values) if n == self.n else struct.pack(f"={n}f", *values)
            return np.frombuffer(packed, F32)
        except (OverflowError, struct.error):
            pass
        self._check_values(values, where, names)  # a value that is not a number, named
        for i, v in enumerate(values):
            try:
                _pack_one(v)
            except (OverflowError, struct.error):
                label = repr(names[i]) if names is not None else f"#{i}"
                raise InputError(
                    422,
                    "out_of_range",
                    f"{where}.features: feature {label} = {v!r} is beyond the float32 range (|x| <= {FLT_MAX:.6g})",
                ) from None
        raise AssertionError("struct refused a row and accepted each of its values")  # pragma: no cover

    def features(
        self, features: Any, *, card_id: int | None, where: str = "body", bools: bool = True
    ) -> tuple[np.ndarray, bool]:
        """The row of ``features`` (object or array) and whether online features must be fetched.

        ``where`` locates the item in messages (``<where>.features: ...``), written out only
        for a refusal. ``bools=False``: the body holds no boolean (see :meth:`_row`).
        """
        if type(features) is dict:
            if len(features) == self.n:
                try:
                    values = self._get(features)
                except KeyError:
                    values = None
                if values is not None:
                    return self._row(values, where, self.names, bools=bools), False
            return self._partial(features, card_id, where)
        if type(features) is list:
            if len(features) != self.n:
                raise InputError(
                    422,
                    "wrong_feature_count",
                    f"{where}.features: expected {self.n} values in the manifest's feature order, got {len(features)}",
                )
            return self._row(features, where, self.names, bools=bools), False
        raise InputError(
            422,
            "invalid_features",
            f"{where}.features: must be an object keyed by feature name or an array of {self.n} numbers, "
            f"got {_json_type(features)}",
        )

    def _partial(self, features: dict[str, Any], card_id: int | None, where: str) -> tuple[np.ndarray, bool]:
        unknown = [k for k in features if k not in self.index]
        if unknown:
            shown = ", ".join(repr(k[:64]) for k in unknown[:5])
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise InputError(422, "unknown_features", f"{where}.features: unknown feature(s) {shown}{more}")
        missing = [n for n in self.names if n not in features]
        fetchable = self.online_enabled and card_id is not None
        not_online = [n for n in missing if not (fetchable and n in self._online_set)]
        if not_online:
            shown = ", ".join(repr(n) for n in not_online[:10])
            more = f" and {len(not_online) - 10} more" if len(not_online) > 10 else ""
            hint = ""
            if self.online_enabled and card_id is None and any(n in self._online_set for n in not_online):
                hint = " (card features are fetched from the online store only when card_id is given)"
            raise InputError(422, "missing_features", f"{where}.features: missing feature(s) {shown}{more}{hint}")
        present = [n for n in self.names if n in features]
        values = [features[n] for n in present]
        row = np.full(self.n, np.nan, dtype=np.float32)
        row[[self.index[n] for n in present]] = self._row(values, where, present)
        return row, True

    # ------------------------------------------------------------------ items
    def item(self, obj: Any, where: str = "body", *, bools: bool = True) -> Item:
        """One transaction object: ``{"features": ..., "card_id"?, "transaction_id"?, "request_id"?}``.

        ``bools=False`` when the body's text has no ``true`` or ``false`` (see :func:`may_hold_bools`):
        the values' types need no check of their own then.
        """
        if type(obj) is not dict:
            raise InputError(422, "invalid_body", f"{where}: must be a JSON object, got {_json_type(obj)}")
        if not obj.keys() <= ITEM_FIELDS:
            extra = sorted(k for k in obj if k not in ITEM_FIELDS)
            raise InputError(
                422,
                "unknown_field",
                f"{where}: unknown field(s) {', '.join(repr(k[:64]) for k in extra[:5])}; "
                f"allowed: {sorted(ITEM_FIELDS)}",
            )
        features = obj.get("features", _MISSING)
        if features is _MISSING:
            raise InputError(422, "missing_features", f"{where}: field 'features' is required")
        card_id = obj.get("card_id")
        if card_id is not None and (type(card_id) is not int or not INT64_MIN <= card_id <= INT64_MAX):
            raise InputError(
                422, "invalid_card_id", f"{where}.card_id: must be a 64-bit integer, got {_json_type(card_id)}"
            )
        txn = obj.get("transaction_id")
        if txn is not None:
            txn = _optional_id(txn, where, "transaction_id")
        rid = obj.get("request_id")
        if rid is not None:
            rid = _optional_id(rid, where, "request_id")
        if not bools and type(features) is list and len(features) == self.n:
            # The common case inline (a function call less per request): an array of numbers.
            # A value struct refuses goes the general way below, which names it.
            try:
                return Item(np.frombuffer(self._pack(*features), F32), card_id, txn, rid, False)
            except (OverflowError, struct.error):
                pass
        row, needs = self.features(features, card_id=card_id, where=where, bools=bools)
        return Item(row, card_id, txn, rid, needs)


def may_hold_bools(body: bytes) -> bool:
    """Whether the features of a JSON body may hold a boolean: its text has ``true`` or
    ``false`` (perhaps inside a string, which only costs the check a body without them skips).

    First, in three short C scans, the common case of one transaction: when the last ``u``
    of the text is the one of the first ``"features"`` key and no ``l`` comes after that
    key, the features (which follow their key) hold neither ``true`` nor ``false``; the
    other fields are type-checked one by one anyway. Searching the whole text for the two
    words costs five times as much (a 4- or 5-byte pattern is matched position by position;
    a byte is found with ``memchr``).
    """
    key = body.find(b'"features"')  # near the start: stops there
    if key >= 0 and body.rfind(b"u") == key + 5 and body.rfind(b"l") < key:
        return False
    return b"true" in body or b"false" in body


def _optional_id(value: Any, where: str, field: str) -> str | None:
    if value is None:
        return None
    if type(value) is not str:
        raise InputError(422, "invalid_id", f"{where}.{field}: must be a string, got {_json_type(value)}")
    if not 1 <= len(value) <= MAX_ID_LENGTH:
        raise InputError(
            422, "invalid_id", f"{where}.{field}: must have 1 to {MAX_ID_LENGTH} characters, got {len(value)}"
        )
    return value
