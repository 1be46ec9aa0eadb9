"""`python -m uploadsrv`: the same as the `uploadsrv` command."""

import sys

from .cli import main

sys.exit(main())
