"""The ``fraudops`` command line. Each stage's command imports its heavy libraries
only when it runs, so that ``fraudops --help`` answers at once."""
