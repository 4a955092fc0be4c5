"""``python -m mleops.demo``."""

import sys

from . import main

sys.exit(main())
