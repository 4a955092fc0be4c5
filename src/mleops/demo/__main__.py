"""``python -m mleops.demo``."""

import sys

from mleops.demo import main

sys.exit(main())
