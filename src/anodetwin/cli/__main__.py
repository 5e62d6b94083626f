"""``python -m anodetwin.cli``: the ``anodetwin`` command (as studies run it under mpiexec)."""

import sys

from anodetwin.cli import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
