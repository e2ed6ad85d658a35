"""``python -m kdviz`` is the ``kdviz`` command."""

import sys

from kdviz.cli import main

sys.exit(main())
