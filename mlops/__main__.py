"""``python -m mlops``: the same command as the installed ``mlops``."""
from __future__ import annotations

import sys

from mlops.cli import main

if __name__ == "__main__":
    sys.exit(main())
