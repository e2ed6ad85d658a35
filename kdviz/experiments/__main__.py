"""The background worker of ``start_experiment``: ``python -m kdviz.experiments worker RUN_ID``
(also ``python -m kdviz.experiments experiment NAME ...``, as ``kdviz experiment``)."""

import sys

from kdviz.experiments.runner import _main

if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
