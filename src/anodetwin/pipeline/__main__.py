"""``python -m anodetwin.pipeline STAGE RUN OUT KEY``: one stage of ``anodetwin run`` in its
own process (:func:`anodetwin.pipeline.runner.run_stage`); a user error prints one line and
exits with status 2."""

import sys

from anodetwin.errors import AnodetwinError
from anodetwin.log import configure_logging


def main(argv: list[str]) -> int:
    """Run the stage ``argv = [STAGE, RUN, OUT, KEY]``; the exit status."""
    from anodetwin.pipeline.runner import run_stage

    configure_logging(0)
    try:
        run_stage(*argv)
    except AnodetwinError as exc:
        print(f"anodetwin: error: stage {argv[0]}: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
