"""``python -m lawforge``: the ``lawforge`` command."""

import sys

from lawforge.cli import main

if __name__ == "__main__":
    sys.exit(main())
