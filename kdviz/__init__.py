"""kdviz: an interactive explorer of dark knowledge (Hinton, Vinyals & Dean 2015)."""

from kdviz.errors import KdvizError

__version__ = "0.1.0"

__all__ = ["KdvizError", "__version__"]
