"""``python -m batchsafe.cli`` runs the command line (tests and subprocess callers use it)."""

import sys

from batchsafe.cli import main

sys.exit(main())
