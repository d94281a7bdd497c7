"""PyTorch -> ONNX, the graph checks, and numeric parity.

The exported module is the logged :class:`fraudops.training.model.FraudProbability`
(or the ``torch.export`` program MLflow stores for it): raw features in schema order go
in, the scaling runs inside the graph, and the sigmoid probability comes out, so the
predictor does nothing but feed the features.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

INPUT_NAME = "features"
OUTPUT_NAME = "probability"
DEFAULT_OPSET = 18
MIN_OPSET = 17
PARITY_TOLERANCE = 1e-5


class ExportError(RuntimeError):
    """The graph could not be exported or fails a check of the contract."""


class ParityError(ExportError):
    """ONNX Runtime and PyTorch disagree by more than the tolerance."""

    def __init__(self, max_abs_diff: float, tolerance: float) -> None:
        super().__init__(f"ONNX/PyTorch parity failed: max |p_onnx - p_torch| = {max_abs_diff:.3e} > {tolerance:.0e}")
        self.max_abs_diff = max_abs_diff
        self.tolerance = tolerance


def export_onnx(
    model: torch.nn.Module,
    path: str | Path,
    *,
    n_features: int,
    opset: int = DEFAULT_OPSET,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Export ``model`` (features ``[batch, n_features]`` -> probability ``[batch]``) to ``path``.

    The batch axis is dynamic; the graph is self-contained (no external data file) and
    passes :func:`check_onnx`. ``metadata`` goes into the graph's ``metadata_props``.
    """
    import onnx
    import torch

    if opset < MIN_OPSET:
        raise ExportError(f"opset must be >= {MIN_OPSET}, got {opset}")
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(model, torch.fx.GraphModule):
        # The module of a torch.export program was traced in eval mode already and
        # refuses eval(); only its flag says "training".
        model.training = False
    else:
        model = model.eval()
    # torch.onnx lists the torchvision ops it skips registering: noise for this model.
    logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
    # The graph optimizer reports each pass at INFO; its result is checked below instead.
    for name in ("onnxscript", "onnx_ir"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # A batch of 2+ rows: torch.export specializes a dimension of size 0 or 1 to a constant.
    example = torch.zeros(4, n_features, dtype=torch.float32)
    batch = torch.export.Dim("batch", min=1)
    try:
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamic_shapes=({0: batch},),
            external_data=False,
            optimize=True,
            verbose=False,
        )
    except Exception as exc:
        raise ExportError(f"torch.onnx.export failed: {exc}") from exc
    if program is None:
        raise ExportError("torch.onnx.export returned no program")
    program.save(str(out), external_data=False)

    proto = onnx.load(str(out))
    if metadata:
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, str(value)
    proto.producer_name = "fraudops"
    onnx.save(proto, str(out))
    check_onnx(out, n_features=n_features, min_opset=MIN_OPSET)
    return out


def graph_opset(path: str | Path) -> int:
    """The default-domain (``ai.onnx``) opset the graph imports."""
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    for imp in proto.opset_import:
        if imp.domain in ("", "ai.onnx"):
            return int(imp.version)
    raise ExportError(f"{path} imports no ai.onnx opset")


def check_onnx(path: str | Path, *, n_features: int, min_opset: int = MIN_OPSET) -> None:
    """``onnx.checker`` (full check, with shape inference) plus the contract: opset,
    one float input ``[batch, n_features]`` with a symbolic batch axis, the output name."""
    import onnx

    try:
        onnx.checker.check_model(str(path), full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"onnx.checker refused {path}: {exc}") from exc
    proto = onnx.load(str(path))
    opset = graph_opset(path)
    if opset < min_opset:
        raise ExportError(f"graph opset {opset} < {min_opset}")
    inputs = [i for i in proto.graph.input if i.name not in {init.name for init in proto.graph.initializer}]
    if [i.name for i in inputs] != [INPUT_NAME]:
        raise ExportError(f"graph inputs are {[i.name for i in inputs]}, expected [{INPUT_NAME!r}]")
    tensor = inputs[0].type.tensor_type
    if tensor.elem_type != onnx.TensorProto.FLOAT:
        raise ExportError(f"input {INPUT_NAME} is not float32")
    dims = tensor.shape.dim
    if len(dims) != 2 or dims[1].dim_value != n_features:
        raise ExportError(f"input {INPUT_NAME} must be [batch, {n_features}], got {[str(d).strip() for d in dims]}")
    if dims[0].dim_value or not dims[0].dim_param:
        raise ExportError(f"input {INPUT_NAME} has no dynamic batch axis (dim 0 = {dims[0].dim_value})")
    if OUTPUT_NAME not in [o.name for o in proto.graph.output]:
        raise ExportError(f"graph outputs are {[o.name for o in proto.graph.output]}, expected {OUTPUT_NAME!r}")


def onnx_predict(path: str | Path, X: np.ndarray, *, batch_size: int = 8192) -> np.ndarray:
    """Probabilities from ONNX Runtime (CPU), float32 ``[n]``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    out = np.empty(X.shape[0], dtype=np.float32)
    for lo in range(0, X.shape[0], batch_size):
        xb = np.ascontiguousarray(X[lo : lo + batch_size], dtype=np.float32)
        res = sess.run([OUTPUT_NAME], {INPUT_NAME: xb})[0]
        out[lo : lo + batch_size] = np.asarray(res, dtype=np.float32).reshape(-1)
    return out


def torch_predict(model: torch.nn.Module, X: np.ndarray, *, batch_size: int = 8192) -> np.ndarray:
    """Probabilities from the PyTorch module on the CPU in fp32, float32 ``[n]``."""
    import torch

    out = np.empty(X.shape[0], dtype=np.float32)
    with torch.no_grad():
        for lo in range(0, X.shape[0], batch_size):
            xb = torch.from_numpy(np.ascontiguousarray(X[lo : lo + batch_size], dtype=np.float32))
            out[lo : lo + batch_size] = model(xb).float().reshape(-1).numpy()
    return out


def measure_parity(model: torch.nn.Module, onnx_path: str | Path, X: np.ndarray) -> float:
    """Largest absolute difference of probabilities between PyTorch and ONNX Runtime on ``X``."""
    if X.shape[0] == 0:
        raise ExportError("parity needs at least one row")
    p_torch = torch_predict(model, X)
    p_onnx = onnx_predict(onnx_path, X)
    if not (np.isfinite(p_torch).all() and np.isfinite(p_onnx).all()):
        raise ExportError("non-finite probabilities in the parity check")
    return float(np.max(np.abs(p_torch.astype(np.float64) - p_onnx.astype(np.float64))))
