"""Command-line plumbing shared by every subcommand: one-line errors and exit codes.

Exit codes: 0 success; 1 the job ran and failed (:class:`JobFailed`); 2 bad input
(:class:`BadInput`, argparse errors). Errors are one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from camotune.errors import BadInput, JobFailed


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors raise :class:`BadInput` (one line, exit 2)."""

    def error(self, message: str) -> NoReturn:
        raise BadInput(message)


class _Stderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time of each record (not the one current
    when logging was set up), so redirections and captured output keep working."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def tracking_uri_given(flag_value: str | None) -> str:
    """The tracking URI a command was given: its ``--tracking-uri``, else
    ``$MLFLOW_TRACKING_URI``, else ""; ``"none"`` (any case) means no MLflow."""
    import os

    return (flag_value or os.environ.get("MLFLOW_TRACKING_URI", "")).strip()


def tracking_off(flag_value: str | None) -> bool:
    """``--tracking-uri none`` (or ``$MLFLOW_TRACKING_URI=none``): no MLflow at all."""
    return tracking_uri_given(flag_value).lower() == "none"


def add_verbose_argument(parser: argparse.ArgumentParser) -> None:
    """``--verbose``: debug log lines, and Ray's, Optuna's and MLflow's own console output
    (hidden otherwise)."""
    parser.add_argument("--verbose", action="store_true",
                        help="debug log lines and the libraries' own console output "
                             "(Ray Tune's tables, Optuna, MLflow; hidden by default)")


def setup_logging(verbose: bool = False) -> None:
    """Log lines to stderr: one line per event, plain text; ``verbose``: DEBUG level."""
    handler = _Stderr()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s",
                                           datefmt="%H:%M:%S"))
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler],
                        force=True)
    for noisy in ("PIL", "matplotlib", "urllib3", "filelock", "alembic", "git"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def run(fn: Callable[[Sequence[str]], int | None], argv: Sequence[str], prog: str) -> int:
    """Run one subcommand and map its outcome to an exit code."""
    try:
        return int(fn(argv) or 0)
    except BadInput as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return BadInput.exit_code
    except JobFailed as exc:
        print(f"{prog}: failed ({exc.reason}): {exc}", file=sys.stderr)
        return JobFailed.exit_code
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
