"""``python -m anodetwin.pipeline STAGE RUN OUT KEY``: one stage of ``anodetwin run`` in its
own process (:func:`anodetwin.pipeline.runner.run_stage`); a user error is written to the
stage's ``error.txt`` (the runner reports it in its one line), worded with the run file's
keys (:func:`anodetwin.pipeline.runner.run_wording`), and exits with status 2."""

import sys
from pathlib import Path

from anodetwin.errors import AnodetwinError
from anodetwin.log import configure_logging


def main(argv: list[str]) -> int:
    """Run the stage ``argv = [STAGE, RUN, OUT, KEY]``; the exit status."""
    from anodetwin.pipeline.runner import run_stage, run_wording

    configure_logging(0)
    try:
        run_stage(*argv)
    except AnodetwinError as exc:  # the options it names are the run file's keys here
        (Path(argv[2]) / argv[0] / "error.txt").write_text(str(run_wording(exc)))
        return 2
    except KeyboardInterrupt:  # the runner says it, once
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
