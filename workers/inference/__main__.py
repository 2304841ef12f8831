"""`python -m workers.inference`: a standalone inference worker (see main)."""

import sys

from . import main

sys.exit(main())
