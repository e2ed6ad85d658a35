"""kdviz: an interactive explorer of dark knowledge (Hinton, Vinyals & Dean 2015)."""

import os

# torch's OpenMP threads busy-wait by default; with the app, a run and the CLI sharing a few cores
# that spinning made training steps ~10x slower here. Set before torch is first imported.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from kdviz.errors import KdvizError  # noqa: E402

__version__ = "0.1.0"

__all__ = ["KdvizError", "__version__"]
