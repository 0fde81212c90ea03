"""``python -m clipeval``."""

import sys

from clipeval.cli import main

sys.exit(main())
