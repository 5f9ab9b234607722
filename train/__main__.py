"""``python -m train``: the training CLI (see :mod:`train.cli`)."""

import os
import sys

from train import cli

if __name__ == "__main__":
    code = cli.main()
    if cli.aborted:  # a second signal: do not wait for the abandoned epoch on the device
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)
