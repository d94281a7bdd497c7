"""fraudops predictor."""

__version__ = "0.1.0"
