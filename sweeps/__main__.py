"""`python -m sweeps SPEC [--dry-run]`."""

import sys

from .cli import main

sys.exit(main())
