"""`python -m workers.models`: a standalone model manager (see role.main)."""

import sys

from .role import main

sys.exit(main())
