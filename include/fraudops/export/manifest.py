"""The bundle manifest (``manifest.json``, docs/CONTRACTS.md).

Standard library only: the predictor reads it without any training dependency.
Reading is strict: a missing or mistyped field is an error that names the field,
because a predictor that guessed a threshold or a feature order would serve wrong
answers quietly.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(ValueError):
    """A manifest that is missing, unreadable or does not follow the contract."""


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def utc_now_iso() -> str:
    """The current time as ``YYYY-MM-DDTHH:MM:SSZ``."""
    return datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Manifest:
    """Everything the predictor needs to serve ``model.onnx`` besides the graph itself."""

    model_name: str
    model_version: str
    run_id: str
    data_version: str
    feature_schema_version: str
    feature_names: tuple[str, ...]
    threshold: float
    onnx_sha256: str
    parity_max_abs_diff: float
    opset: int
    input_name: str = "features"
    output_name: str = "probability"
    created_at: str = field(default_factory=utc_now_iso)
    metrics: dict[str, float] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of the contract."""
        out = asdict(self)
        out["feature_names"] = list(self.feature_names)
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def write(self, path: str | Path) -> Path:
        """Write ``manifest.json`` (``path`` is the file or the bundle directory)."""
        p = Path(path)
        if p.is_dir():
            p = p / "manifest.json"
        p.write_text(self.to_json(), encoding="utf-8")
        return p

    @classmethod
    def from_dict(cls, data: Any) -> Manifest:
        """Parse and validate a manifest object; :class:`ManifestError` names what is wrong."""
        if not isinstance(data, dict):
            raise ManifestError(f"a manifest must be a JSON object, got {type(data).__name__}")
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ManifestError(f"unsupported manifest format_version {version!r} (this build reads {FORMAT_VERSION})")
        required = (
            "model_name",
            "model_version",
            "run_id",
            "data_version",
            "feature_schema_version",
            "feature_names",
            "threshold",
            "onnx_sha256",
            "parity_max_abs_diff",
            "opset",
        )
        missing = [k for k in required if k not in data]
        if missing:
            raise ManifestError(f"manifest lacks field(s): {', '.join(missing)}")
        names = data["feature_names"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ManifestError("manifest field feature_names must be a list of strings")
        metrics = data.get("metrics", {})
        if not isinstance(metrics, dict):
            raise ManifestError("manifest field metrics must be an object")
        try:
            return cls(
                model_name=_str(data, "model_name"),
                model_version=_str(data, "model_version"),
                run_id=_str(data, "run_id"),
                data_version=_str(data, "data_version"),
                feature_schema_version=_str(data, "feature_schema_version"),
                feature_names=tuple(names),
                threshold=_num(data, "threshold"),
                onnx_sha256=_str(data, "onnx_sha256"),
                parity_max_abs_diff=_num(data, "parity_max_abs_diff"),
                opset=_int(data, "opset"),
                input_name=_str(data, "input_name", "features"),
                output_name=_str(data, "output_name", "probability"),
                created_at=_str(data, "created_at", ""),
                metrics={str(k): float(v) for k, v in metrics.items()},
                format_version=FORMAT_VERSION,
            )
        except (TypeError, ValueError) as exc:
            if isinstance(exc, ManifestError):
                raise
            raise ManifestError(f"invalid manifest: {exc}") from exc

    @classmethod
    def read(cls, path: str | Path) -> Manifest:
        """Read ``manifest.json`` (``path`` is the file or the bundle directory)."""
        p = Path(path)
        if p.is_dir():
            p = p / "manifest.json"
        try:
            text = p.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ManifestError(f"no manifest at {p}") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ManifestError(f"cannot read the manifest {p}: {exc}") from exc
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ManifestError(f"{p} is not valid JSON (truncated?): {exc}") from exc
        return cls.from_dict(data)


def _str(data: dict[str, Any], key: str, default: str | None = None) -> str:
    value = data.get(key, default)
    if not isinstance(value, str):
        raise ManifestError(f"manifest field {key} must be a string, got {value!r}")
    return value


def _num(data: dict[str, Any], key: str) -> float:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ManifestError(f"manifest field {key} must be a number, got {value!r}")
    return float(value)


def _int(data: dict[str, Any], key: str) -> int:
    value = data[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise ManifestError(f"manifest field {key} must be an integer, got {value!r}")
    return value


def _validate(m: Manifest) -> None:
    if m.format_version != FORMAT_VERSION:
        raise ManifestError(f"unsupported manifest format_version {m.format_version}")
    for key in ("model_name", "model_version", "run_id", "feature_schema_version", "input_name", "output_name"):
        if not getattr(m, key):
            raise ManifestError(f"manifest field {key} must not be empty")
    if not m.feature_names:
        raise ManifestError("manifest field feature_names must not be empty")
    if len(set(m.feature_names)) != len(m.feature_names):
        raise ManifestError("manifest field feature_names has duplicates")
    if not (math.isfinite(m.threshold) and 0.0 <= m.threshold <= 1.0):
        raise ManifestError(f"manifest field threshold must be a probability in [0, 1], got {m.threshold}")
    if not _SHA256.match(m.onnx_sha256):
        raise ManifestError(f"manifest field onnx_sha256 must be 64 lowercase hex digits, got {m.onnx_sha256!r}")
    if not (math.isfinite(m.parity_max_abs_diff) and m.parity_max_abs_diff >= 0):
        raise ManifestError(f"manifest field parity_max_abs_diff must be >= 0, got {m.parity_max_abs_diff}")
    if m.opset < 17:
        raise ManifestError(f"manifest field opset must be >= 17, got {m.opset}")
