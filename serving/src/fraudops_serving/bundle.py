"""Model bundles: read, verify and open for scoring (docs/CONTRACTS.md, "Model bundle").

A bundle is a directory with ``model.onnx``, ``manifest.json`` and optionally
``reference_profile.json``. :func:`load_bundle` is the gate in front of serving. It
refuses, with the reason:

* a missing or unreadable file, a manifest that does not follow the contract;
* a graph whose SHA-256 differs from the manifest's (truncated or corrupt copy);
  the bytes that are hashed are the bytes ONNX Runtime opens, so nothing can change
  between the check and the load;
* a feature schema version or feature names other than the ones this deployment serves;
* a graph ONNX Runtime cannot open, whose input/output names or width differ from the
  manifest's, whose batch axis is fixed, or that does not answer finite probabilities in
  ``[0, 1]`` on a smoke batch.

The manifest reader is a copy of the contract in this package on purpose: the predictor
installs without the ``fraudops`` package and its training dependencies.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson

if TYPE_CHECKING:
    import onnxruntime as ort

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
MANIFEST_FILE = "manifest.json"
PROFILE_FILE = "reference_profile.json"
FORMAT_VERSION = 1
MIN_OPSET = 17
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class BundleError(ValueError):
    """A bundle that must not be served; the message says why."""


@dataclass(frozen=True, slots=True)
class Manifest:
    """The fields of ``manifest.json`` the predictor relies on (and the raw object)."""

    model_name: str
    model_version: str
    run_id: str
    feature_schema_version: str
    feature_names: tuple[str, ...]
    threshold: float
    onnx_sha256: str
    input_name: str
    output_name: str
    opset: int
    raw: dict[str, Any] = field(repr=False, compare=False)

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @classmethod
    def parse(cls, data: Any, where: str = "manifest") -> Manifest:
        """Validate a manifest object; :class:`BundleError` names the field that is wrong."""
        if not isinstance(data, dict):
            raise BundleError(f"{where}: a manifest must be a JSON object, got {type(data).__name__}")
        if data.get("format_version") != FORMAT_VERSION:
            raise BundleError(
                f"{where}: unsupported format_version {data.get('format_version')!r} "
                f"(this predictor reads {FORMAT_VERSION})"
            )
        required = ("model_name", "model_version", "run_id", "feature_schema_version", "feature_names", "threshold")
        missing = [k for k in (*required, "onnx_sha256", "opset") if k not in data]
        if missing:
            raise BundleError(f"{where}: missing field(s) {', '.join(missing)}")

        def text(key: str, default: str | None = None) -> str:
            value = data.get(key, default)
            if not isinstance(value, str) or not value:
                raise BundleError(f"{where}: field {key} must be a non-empty string, got {value!r}")
            return value

        names = data["feature_names"]
        if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
            raise BundleError(f"{where}: feature_names must be a non-empty list of names")
        if len(set(names)) != len(names):
            raise BundleError(f"{where}: feature_names has duplicates")
        threshold = data["threshold"]
        if isinstance(threshold, bool) or not isinstance(threshold, int | float) or not 0.0 <= threshold <= 1.0:
            raise BundleError(f"{where}: threshold must be a probability in [0, 1], got {threshold!r}")
        sha = data["onnx_sha256"]
        if not isinstance(sha, str) or not _SHA256.match(sha):
            raise BundleError(f"{where}: onnx_sha256 must be 64 lowercase hex digits, got {sha!r}")
        opset = data["opset"]
        if isinstance(opset, bool) or not isinstance(opset, int) or opset < MIN_OPSET:
            raise BundleError(f"{where}: opset must be an integer >= {MIN_OPSET}, got {opset!r}")
        return cls(
            model_name=text("model_name"),
            model_version=text("model_version"),
            run_id=text("run_id"),
            feature_schema_version=text("feature_schema_version"),
            feature_names=tuple(names),
            threshold=float(threshold),
            onnx_sha256=sha,
            input_name=text("input_name", "features"),
            output_name=text("output_name", "probability"),
            opset=opset,
            raw=data,
        )


def _read_json(path: Path) -> Any:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"no {path.name} at {path.parent}") from None
    except OSError as exc:
        raise BundleError(f"cannot read {path}: {exc}") from exc
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BundleError(f"{path} is not valid JSON (truncated?): {exc}") from exc


@dataclass(frozen=True, slots=True)
class SessionConfig:
    """How ONNX Runtime sessions are opened."""

    device: str = "cpu"  # cpu | cuda | auto
    batch_threads: int = 0  # 0: one per core

    def providers(self) -> list[str]:
        import onnxruntime as ort

        available = ort.get_available_providers()
        if self.device == "cuda":
            if "CUDAExecutionProvider" not in available:
                raise BundleError(
                    f"device=cuda but ONNX Runtime offers only {available}: install onnxruntime-gpu (the GPU image)"
                )
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        if self.device == "auto" and "CUDAExecutionProvider" in available:
            return ["CUDAExecutionProvider", "CPUExecutionProvider"]
        return ["CPUExecutionProvider"]


def _session(model: bytes, threads: int, providers: list[str]) -> ort.InferenceSession:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    # Idle pool threads must not spin: on a small machine they would steal the event loop's core.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.log_severity_level = 3  # a refused graph is reported by us, with the reason
    return ort.InferenceSession(model, sess_options=opts, providers=providers)


class Model:
    """A verified bundle, opened for scoring.

    Two sessions on the same graph: one with a single intra-op thread for single rows
    (threads cost more than they save on one row) and one with a thread per core for
    batches. A batch that arrives while another is being scored takes the single-thread
    session: the cores are busy already, and two single-thread calls side by side score
    about a third more rows per second than two calls that each split their rows over
    every core. ``predict_one`` reuses one input buffer; it must only be called from one
    thread at a time (the event loop), ``predict`` is safe from any thread.
    """

    def __init__(
        self,
        manifest: Manifest,
        model_bytes: bytes,
        *,
        source: str,
        profile: dict[str, Any] | None,
        sessions: SessionConfig,
    ) -> None:
        self.manifest = manifest
        self.source = source
        self.reference_profile = profile
        self.loaded_at = time.time()
        self.size_bytes = len(model_bytes)
        providers = sessions.providers()
        self.providers = providers
        threads = sessions.batch_threads or (os.cpu_count() or 1)
        try:
            self._one = _session(model_bytes, 1, providers)
            self._many = _session(model_bytes, threads, providers) if threads > 1 else self._one
        except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/InvalidProtobuf
            raise BundleError(f"{source}: ONNX Runtime cannot open the graph: {exc}") from exc
        self.name = manifest.model_name
        self.version = manifest.model_version
        self.threshold = manifest.threshold
        self.n_features = manifest.n_features
        self.input_name = manifest.input_name
        self.output_names = [manifest.output_name]
        self._in_flight = 0  # batches being scored now (see predict)
        self._lock = threading.Lock()
        self._check_graph()
        # Single rows and micro-batches run through I/O bindings on preallocated input and
        # output buffers, one binding per row count (made on first use): a call costs 5 us
        # less than session.run, which converts and allocates on every call.
        # (No RunOptions: with one, ORT 1.32 looks up a missing config key through a C++
        # exception on every run, which costs more than the model.)
        out_shape = self._one.get_outputs()[[o.name for o in self._one.get_outputs()].index(manifest.output_name)].shape
        self._out_rank = len(out_shape)
        self._bound: dict[int, tuple[np.ndarray, np.ndarray, Callable[[], Any]]] = {}
        self._buf, self._out, self._run_bound = self._bind(1)

    MAX_BOUND_ROWS = 64  # micro-batches up to this many rows run through a binding of their own

    def _bind(self, rows: int) -> tuple[np.ndarray, np.ndarray, Callable[[], Any]]:
        """(input buffer, output buffer, run) of a binding for ``rows`` rows."""
        bound = self._bound.get(rows)
        if bound is not None:
            return bound
        buf = np.zeros((rows, self.n_features), dtype=np.float32)
        out = np.zeros(rows, dtype=np.float32)
        binding = self._one.io_binding()
        binding.bind_input(self.input_name, "cpu", 0, np.float32, [rows, self.n_features], buf.ctypes.data)
        shape = [rows] + [1] * (self._out_rank - 1)
        binding.bind_output(self.output_names[0], "cpu", 0, np.float32, shape, out.ctypes.data)
        # The bound run without the Python wrapper's per-call checks (WebGPU graph capture,
        # which a CPU or CUDA session never does); the public method where the private
        # attributes it needs are not there. The binding lives as long as the closure.
        run: Callable[[], Any]
        try:
            run = functools.partial(self._one._sess.run_with_iobinding, binding._iobinding, None)
        except AttributeError:
            run = functools.partial(self._one.run_with_iobinding, binding)
        self._bound[rows] = (buf, out, run)
        return buf, out, run

    @property
    def buffer(self) -> np.ndarray:
        """The reusable single-row input buffer of :meth:`predict_one`."""
        return self._buf

    def _check_graph(self) -> None:
        m = self.manifest
        inputs, outputs = self._one.get_inputs(), self._one.get_outputs()
        if [i.name for i in inputs] != [m.input_name]:
            raise BundleError(
                f"{self.source}: graph inputs {[i.name for i in inputs]} != manifest input {m.input_name!r}"
            )
        if m.output_name not in [o.name for o in outputs]:
            raise BundleError(f"{self.source}: graph outputs {[o.name for o in outputs]} lack {m.output_name!r}")
        if inputs[0].type != "tensor(float)":
            raise BundleError(f"{self.source}: graph input type {inputs[0].type} is not tensor(float)")
        shape = inputs[0].shape
        if len(shape) != 2 or shape[1] != m.n_features:
            raise BundleError(f"{self.source}: graph input shape {shape} is not [batch, {m.n_features}]")
        if isinstance(shape[0], int):
            raise BundleError(f"{self.source}: graph input has a fixed batch size {shape[0]}; a dynamic axis is needed")
        # Smoke test: a batch of zeros and of reference means must give finite probabilities.
        rows = [np.zeros(m.n_features, dtype=np.float32)]
        means = self.reference_means()
        if means is not None:
            rows.append(means)
        x = np.stack(rows)
        for label, run in (("single-row", self._one), ("batch", self._many)):
            try:
                out = np.asarray(run.run(self.output_names, {m.input_name: x})[0], dtype=np.float32).reshape(-1)
            except Exception as exc:
                raise BundleError(f"{self.source}: the {label} session fails on a smoke batch: {exc}") from exc
            if out.shape != (len(rows),) or not np.all(np.isfinite(out)) or out.min() < 0 or out.max() > 1:
                raise BundleError(f"{self.source}: the graph does not answer one probability per row: {out[:4]}")

    def reference_means(self) -> np.ndarray | None:
        """Per-feature training means from ``reference_profile.json`` (None when absent)."""
        features = (self.reference_profile or {}).get("features")
        if not isinstance(features, dict):
            return None
        try:
            return np.array([float(features[n]["mean"]) for n in self.manifest.feature_names], dtype=np.float32)
        except (KeyError, TypeError, ValueError):
            return None

    def predict_one(self) -> float:
        """Score the row in :attr:`buffer` (fill it first); event-loop thread only."""
        self._run_bound()
        return float(self._out[0])

    def predict_rows(self, x: np.ndarray) -> np.ndarray:
        """Probabilities of a micro-batch through the binding of its row count (a new array);
        event-loop thread only, as :meth:`predict_one`."""
        if x.shape[0] > self.MAX_BOUND_ROWS or x.ndim != 2 or x.shape[1] != self.n_features:
            return self.predict_small(x)  # ONNX Runtime names what is wrong with the shape
        buf, out, run = self._bind(x.shape[0])
        np.copyto(buf, x)
        run()
        return out.copy()

    def predict_small(self, x: np.ndarray) -> np.ndarray:
        """Probabilities of a few rows (a micro-batch): the single-thread session, safe from any thread."""
        out = self._one.run(self.output_names, {self.input_name: x})[0]
        return np.asarray(out, dtype=np.float32).reshape(-1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Probabilities of the rows of ``x`` (float32, shape ``[n, n_features]``, any layout:
        a column-major view is copied row-major here, in the calling thread)."""
        x = np.ascontiguousarray(x)
        if x.shape[0] == 1 or self._many is self._one:
            return self.predict_small(x)
        with self._lock:
            session = self._many if self._in_flight == 0 else self._one
            self._in_flight += 1
        try:
            out = session.run(self.output_names, {self.input_name: x})[0]
        finally:
            with self._lock:
                self._in_flight -= 1
        return np.asarray(out, dtype=np.float32).reshape(-1)

    def describe(self) -> dict[str, Any]:
        """What ``GET /model`` shows about this model."""
        return {
            "model_name": self.name,
            "model_version": self.version,
            "threshold": self.threshold,
            "n_features": self.n_features,
            "onnx_sha256": self.manifest.onnx_sha256,
            "source": self.source,
            "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.loaded_at)),
            "providers": self.providers,
            "size_bytes": self.size_bytes,
            "manifest": self.manifest.raw,
        }


def load_bundle(
    path: str | Path,
    *,
    sessions: SessionConfig | None = None,
    feature_schema_version: str = "",
    feature_names: tuple[str, ...] = (),
    source: str | None = None,
) -> Model:
    """Read, verify and open the bundle in directory ``path``.

    ``feature_schema_version`` and ``feature_names``, when given, must equal the
    manifest's. Raises :class:`BundleError` with the reason for anything that must not
    be served.
    """
    root = Path(path)
    where = source or str(root)
    if not root.is_dir():
        raise BundleError(f"no bundle directory at {root}")
    manifest = Manifest.parse(_read_json(root / MANIFEST_FILE), where=f"{where}/{MANIFEST_FILE}")
    if feature_schema_version and manifest.feature_schema_version != feature_schema_version:
        raise BundleError(
            f"{where}: trained on feature schema {manifest.feature_schema_version}, "
            f"this predictor serves {feature_schema_version}"
        )
    if feature_names and tuple(manifest.feature_names) != tuple(feature_names):
        diff = [
            f"#{i}: bundle {a!r}, served {b!r}"
            for i, (a, b) in enumerate(zip(manifest.feature_names, feature_names, strict=False))
            if a != b
        ]
        raise BundleError(
            f"{where}: lists {manifest.n_features} features, this predictor serves {len(feature_names)}; "
            f"first differences: {', '.join(diff[:3]) or 'lengths differ'}"
        )
    model_path = root / MODEL_FILE
    try:
        model_bytes = model_path.read_bytes()
    except FileNotFoundError:
        raise BundleError(f"{where}: no {MODEL_FILE}") from None
    except OSError as exc:
        raise BundleError(f"{where}: cannot read {MODEL_FILE}: {exc}") from exc
    actual = hashlib.sha256(model_bytes).hexdigest()
    if actual != manifest.onnx_sha256:
        raise BundleError(
            f"{where}: {MODEL_FILE} does not match its manifest (sha256 {actual[:16]}..., expected "
            f"{manifest.onnx_sha256[:16]}..., {len(model_bytes):,} bytes): truncated or corrupt"
        )
    profile: dict[str, Any] | None = None
    if (root / PROFILE_FILE).exists():
        loaded = _read_json(root / PROFILE_FILE)
        if not isinstance(loaded, dict):
            raise BundleError(f"{where}: {PROFILE_FILE} is not a JSON object")
        profile = loaded
    return Model(manifest, model_bytes, source=where, profile=profile, sessions=sessions or SessionConfig())


def fingerprint(path: str | Path) -> str:
    """A cheap identity of a bundle directory's current content (manifest bytes + graph stat).

    Polling compares fingerprints to notice a new bundle without hashing the graph each time.
    """
    root = Path(path)
    h = hashlib.sha256()
    try:
        h.update((root / MANIFEST_FILE).read_bytes())
        st = (root / MODEL_FILE).stat()
        h.update(f"{st.st_size}:{st.st_mtime_ns}:{st.st_ino}".encode())
    except OSError as exc:
        return f"unreadable:{type(exc).__name__}"
    return h.hexdigest()
