"""``python -m clipeval``."""

import sys

from clipeval.runs.cli import main

sys.exit(main())
