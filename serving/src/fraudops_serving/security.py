"""API keys: compared in constant time, never logged.

Keys are kept only as SHA-256 digests. A presented key is hashed and compared with
:func:`hmac.compare_digest` against every configured digest (no early exit), so neither
the position of the first differing byte nor the length of a key leaks through timing.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

from pydantic import SecretStr

HEADER = "x-api-key"


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class KeyRing:
    """A set of accepted keys."""

    __slots__ = ("_digests",)

    def __init__(self, keys: Iterable[SecretStr]) -> None:
        self._digests = tuple(_digest(k.get_secret_value()) for k in keys)

    def __bool__(self) -> bool:
        return bool(self._digests)

    def __repr__(self) -> str:  # never the keys
        return f"KeyRing({len(self._digests)} key(s))"

    def accepts(self, presented: str | None) -> bool:
        """Whether ``presented`` is one of the keys."""
        if presented is None or not self._digests:
            return False
        candidate = _digest(presented)
        ok = False
        for digest in self._digests:
            ok |= hmac.compare_digest(candidate, digest)
        return ok


def presented_key(headers: dict[str, str] | object, authorization: str | None = None) -> str | None:
    """The key of a request: ``X-API-Key``, or ``Authorization: Bearer <key>``."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    key = get(HEADER)
    if key:
        return str(key)
    auth = authorization if authorization is not None else get("authorization")
    if auth and auth[:7].lower() == "bearer ":
        return str(auth[7:].strip()) or None
    return None
