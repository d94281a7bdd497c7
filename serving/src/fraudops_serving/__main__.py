"""``python -m fraudops_serving``: the same as ``fraudops-serve``."""

from fraudops_serving.server import main

main()
