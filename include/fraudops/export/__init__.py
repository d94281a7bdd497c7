"""The model bundle: ONNX export with scaling baked in, parity against PyTorch, the
manifest, and :func:`fraudops.export.bundle.load_bundle` for whoever serves it.

:mod:`fraudops.export.manifest` and :mod:`fraudops.export.bundle` need only the standard
library (and ONNX Runtime to open the graph), so that the predictor can use them
without PyTorch, pandas or any training code.
"""
