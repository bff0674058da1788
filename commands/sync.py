"""``camotune sync SWEEP_DIR``: send the MLflow calls a sweep could not send.

A sweep whose tracking server was down at its end keeps the unsent calls in
``<sweep>/tracking_pending.jsonl`` (see `camotune.tracking.journal`). This command sends them,
in order and idempotently (running it twice changes nothing), and updates ``mlflow_runs.yaml``.
Exit 0 when nothing is left to send, 2 (one line) when the tracking server cannot be reached
or goes away during the replay: run it again later. Progress goes to stderr.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from camotune.cliutil import Parser, setup_logging
from camotune.errors import BadInput

log = logging.getLogger(__name__)


def sync_parser() -> Parser:
    p = Parser(prog="camotune sync",
               description="Send the MLflow tracking calls a sweep could not send (kept in "
                           "SWEEP_DIR/tracking_pending.jsonl); safe to run more than once.")
    p.add_argument("sweep_dir")
    p.add_argument("--tracking-uri", default=None,
                   help="the MLflow store to send to (default: the sweep's own, else "
                        "$MLFLOW_TRACKING_URI, else <storage-path>/mlflow.db)")
    p.add_argument("--verbose", action="store_true", help="debug logging")
    return p


@contextlib.contextmanager
def _sweep_lock(sweep_dir: Path) -> Iterator[None]:
    """The sweep folder's lock, where this camotune has one (a second command on the same
    folder exits 2 naming the holder)."""
    try:
        from camotune.sweepdir.lock import locked
    except ImportError:
        yield
        return
    with locked(sweep_dir, "sync"):
        yield


def sync_main(argv: Sequence[str]) -> int:
    from tqdm import tqdm

    from camotune.search.settings import read_settings
    from camotune.tracking.journal import JOURNAL_FILE, Journal
    from camotune.tracking.replay import send_journal
    from camotune.tracking.writer import check_reachable, resolve_tracking_uri, shown

    args = sync_parser().parse_args(argv)
    setup_logging(args.verbose)
    sweep_dir = Path(args.sweep_dir)
    if not sweep_dir.is_dir():
        raise BadInput(f"{sweep_dir}: no such sweep folder")
    settings = read_settings(sweep_dir)
    uri = resolve_tracking_uri(args.tracking_uri or settings.tracking_uri, settings.storage_path)
    with _sweep_lock(sweep_dir):
        total = Journal(sweep_dir / JOURNAL_FILE).count_unsent()
        if total == 0:
            print(f"sync: nothing to send ({sweep_dir / JOURNAL_FILE} has no unsent calls)",
                  file=sys.stderr)
            return 0
        check_reachable(uri, source="--tracking-uri" if args.tracking_uri else "tracking URI")
        with tqdm(total=total, desc="sync", unit="call", file=sys.stderr,
                  disable=None if sys.stderr.isatty() else True) as bar:
            def progress(done: int, of: int) -> None:
                bar.update(1)
                if not sys.stderr.isatty() and (done == of or done % 100 == 0):
                    print(f"sync: {done}/{of} calls", file=sys.stderr)
            result = send_journal(sweep_dir, uri, progress=progress)
    if result.left:
        raise BadInput(f"the tracking server {shown(uri)} went away ({result.error}): "
                       f"{result.sent} calls sent, {result.left} left; run camotune sync again")
    print(f"sync: {result.sent} calls sent to {shown(uri)}"
          + (f", {result.rejected} rejected by the server (not retried)" if result.rejected
             else ""), file=sys.stderr)
    return 0
