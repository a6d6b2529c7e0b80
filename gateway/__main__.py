"""`python -m gateway`: the same as the `gateway` console script."""

import sys

from gateway.cli import main

if __name__ == "__main__":  # not when a worker process re-imports this module
    sys.exit(main())
