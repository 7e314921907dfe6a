"""``python -m grainery``: the same as the ``grainery`` command."""

import sys

from grainery.silo.cli import main

sys.exit(main())
