"""`python -m gateway`: the same as the `gateway` console script."""

import sys

if __name__ == "__main__" and sys.argv[1:2] == ["run"]:
    from gateway import earlysignals

    earlysignals.catch()  # before the rest of the gateway is imported

from gateway.cli import main  # after the signals are caught

if __name__ == "__main__":  # not when a worker process re-imports this module
    sys.exit(main())
