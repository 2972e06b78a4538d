"""`python -m cluster up|down|runtime-env`."""

import sys

from .cli import main

sys.exit(main())
