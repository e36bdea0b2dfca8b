"""`python -m engine.cli ARGS`: the `restgov` console script."""

import sys

from . import main

sys.exit(main())
