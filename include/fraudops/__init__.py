"""fraudops: a production-grade MLOps pipeline for a fraud-detection model.

Importing the package does no work: every heavy library is imported inside the
function that needs it, so that the CLI, DAG parsing and the serving image stay fast.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
