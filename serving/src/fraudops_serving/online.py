"""Online card features, read from Feast's Redis online store without Feast.

Feast (``fraudops features materialize``) writes one Redis hash per card:

* key: the serialized entity key (version 3) followed by the project name:
  ``<u32 1><u32 STRING=2><u32 len>card_id<u32 INT64=4><u32 8><i64 card id>fraudops``;
* fields: ``murmur3_32("<view>:<feature>")`` as 4 little-endian bytes, each holding a
  serialized ``feast.types.Value`` protobuf (a float32 feature is ``0x35`` + 4 bytes);
  ``_ts:<view>`` holds the event time.

Reading that layout directly costs one ``HMGET`` (one round trip for a whole batch,
pipelined) and keeps Feast and protobuf out of the predictor. The layout is pinned by a
test that materializes with Feast itself and reads back here.

Time budget and fallback: a lookup that does not answer within ``timeout_s`` (or fails)
is abandoned; after ``breaker_failures`` consecutive failures the store is skipped for
``cooldown_s`` (so a dead store does not cost every request the whole budget). What
happens then is the caller's policy (see :mod:`fraudops_serving.app`).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from fraudops_serving.metrics import Metrics

log = logging.getLogger(__name__)

_STRING, _INT64 = 2, 4


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit (unsigned), the hash Feast names Redis hash fields with."""
    c1, c2, mask = 0xCC9E2D51, 0x1B873593, 0xFFFFFFFF
    h = seed & mask
    n = len(data) // 4 * 4
    for (block,) in struct.iter_unpack("<I", data[:n]):
        k = (block * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        k = (k * c2) & mask
        h ^= k
        h = ((h << 13) | (h >> 19)) & mask
        h = (h * 5 + 0xE6546B64) & mask
    tail = data[n:]
    k = 0
    if len(tail) >= 3:
        k ^= tail[2] << 16
    if len(tail) >= 2:
        k ^= tail[1] << 8
    if tail:
        k ^= tail[0]
        k = (k * c1) & mask
        k = ((k << 15) | (k >> 17)) & mask
        k = (k * c2) & mask
        h ^= k
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & mask
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & mask
    h ^= h >> 16
    return h


def feast_field(view: str, feature: str) -> bytes:
    """The Redis hash field Feast stores ``view:feature`` under."""
    return struct.pack("<I", murmur3_32(f"{view}:{feature}".encode()))


def feast_key(entity_key: str, value: int, project: str) -> bytes:
    """The Redis key of one int64 entity (serialization version 3) in ``project``."""
    name = entity_key.encode()
    return b"".join(
        (
            struct.pack("<III", 1, _STRING, len(name)),
            name,
            struct.pack("<IIq", _INT64, 8, value),
            project.encode(),
        )
    )


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7


def decode_value(raw: bytes | None) -> float:
    """A scalar ``feast.types.Value`` protobuf as a float (NaN when absent or not numeric)."""
    if not raw:
        return float("nan")
    tag = raw[0]
    if tag == 0x35:  # float_val (6, fixed32)
        return float(struct.unpack_from("<f", raw, 1)[0])
    if tag == 0x29:  # double_val (5, fixed64)
        return float(struct.unpack_from("<d", raw, 1)[0])
    if tag in (0x18, 0x20, 0x38):  # int32_val, int64_val, bool_val (varints)
        value, _ = _varint(raw, 1)
        if tag != 0x38 and value >= 1 << 63:
            value -= 1 << 64
        return float(value)
    return float("nan")


class OnlineStoreUnavailable(RuntimeError):
    """The online store did not answer within the budget, failed, or is skipped for now."""

    def __init__(self, result: str, message: str) -> None:
        super().__init__(message)
        self.result = result


class OnlineFeatures:
    """Card features from Redis, within a time budget, behind a circuit breaker."""

    def __init__(
        self,
        url: str,
        *,
        project: str,
        view: str,
        entity_key: str,
        feature_names: Sequence[str],
        timeout_s: float,
        breaker_failures: int = 5,
        cooldown_s: float = 5.0,
        metrics: Metrics | None = None,
    ) -> None:
        import redis.asyncio as aioredis

        self.feature_names = tuple(feature_names)
        self.project = project
        self.view = view
        self.entity_key = entity_key
        self.timeout_s = timeout_s
        self.breaker_failures = breaker_failures
        self.cooldown_s = cooldown_s
        self.metrics = metrics
        self._fields = [feast_field(view, n) for n in self.feature_names]
        self._client: Any = aioredis.Redis.from_url(
            url, socket_timeout=max(timeout_s * 4, 0.05), socket_connect_timeout=max(timeout_s * 4, 0.05)
        )
        self._failures = 0
        self._open_until = 0.0
        self.last_error = ""

    def _count(self, result: str) -> None:
        if self.metrics is not None:
            self.metrics.online.labels(result).inc()

    async def fetch(self, card_ids: Sequence[int]) -> np.ndarray:
        """Features of each card, ``[len(card_ids), n_features]`` float32; a row of NaN for an unknown card.

        Raises :class:`OnlineStoreUnavailable` on timeout, error, or while the breaker is open.
        """
        now = time.monotonic()
        if now < self._open_until:
            self._count("circuit_open")
            raise OnlineStoreUnavailable(
                "circuit_open", f"online store skipped after repeated failures: {self.last_error}"
            )
        keys = [feast_key(self.entity_key, int(c), self.project) for c in card_ids]
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout_s):
                if len(keys) == 1:
                    replies = [await self._client.hmget(keys[0], self._fields)]
                else:
                    async with self._client.pipeline(transaction=False) as pipe:
                        for key in keys:
                            pipe.hmget(key, self._fields)
                        replies = await pipe.execute()
        except TimeoutError:
            self._failed("timeout", f"no answer within {self.timeout_s * 1000:.0f} ms")
            raise OnlineStoreUnavailable(
                "timeout", f"online store did not answer within {self.timeout_s * 1000:.0f} ms"
            ) from None
        except Exception as exc:  # connection refused, reset, auth... (redis raises many types)
            self._failed("error", f"{type(exc).__name__}: {exc}")
            raise OnlineStoreUnavailable("error", f"online store failed: {type(exc).__name__}: {exc}") from None
        if self.metrics is not None:
            self.metrics.online_latency.observe(time.perf_counter() - t0)
        self._failures = 0
        out = np.array([[decode_value(v) for v in reply] for reply in replies], dtype=np.float32)
        known = ~np.all(np.isnan(out), axis=1)
        if self.metrics is not None:
            hits = int(known.sum())
            self.metrics.online.labels("hit").inc(hits)
            self.metrics.online.labels("unknown_card").inc(len(keys) - hits)
        return out

    def _failed(self, result: str, message: str) -> None:
        self._count(result)
        self.last_error = message
        self._failures += 1
        if self._failures >= self.breaker_failures:
            self._open_until = time.monotonic() + self.cooldown_s
            log.warning(
                "online store: %d consecutive failures (%s); skipping it for %.0f s",
                self._failures,
                message,
                self.cooldown_s,
            )
            self._failures = 0

    async def close(self) -> None:
        await self._client.aclose()
