"""``camotune train FLAGS``: one two-stage training run from the command line."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from camotune.cliutil import Parser, setup_logging
from camotune.trainer.config import add_config_arguments, config_from_namespace, given_fields

log = logging.getLogger(__name__)


def train_parser() -> Parser:
    parser = Parser(
        prog="camotune train",
        description="Train CamoXpert in two stages (backbone frozen, then unfrozen). Every flag "
                    "is a TrainConfig field; the original training script's flags keep their "
                    "names. Writes config.yaml, command.txt, history.csv, last.pt and best.pt "
                    "under --checkpoint-dir.",
    )
    parser.add_argument("--overwrite", action="store_true",
                        help="train into a --checkpoint-dir that already holds a run")
    parser.add_argument("--tracking-uri", default=None,
                        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI; none = no MLflow)")
    parser.add_argument("--experiment", default="camotune",
                        help="MLflow experiment name (default: %(default)s)")
    add_config_arguments(parser)
    return parser


def train_main(argv: Sequence[str]) -> int:
    args = train_parser().parse_args(list(argv))
    setup_logging()
    given = given_fields(args)
    if given.get("resume_from"):
        from camotune.trainer.checkpoint import resolve_resume

        cfg = resolve_resume(given["resume_from"], given)
    else:
        cfg = config_from_namespace(args)

    from camotune.trainer.loop import fit

    report = None
    tracker = None
    uri = _tracking_uri(args.tracking_uri)
    if uri:
        from camotune.tracking import TrainRunTracker

        tracker = TrainRunTracker(uri, args.experiment, cfg)
        report = tracker.log_epoch
    try:
        result = fit(cfg, report=report, overwrite=args.overwrite)
    except BaseException as exc:
        if tracker is not None:
            tracker.finish(error=exc)
        raise
    if tracker is not None:
        tracker.finish()
    log.info("done: best_val_iou=%.4f epochs=%d checkpoint_dir=%s", result.best_val_iou,
             result.epochs_run, result.checkpoint_dir)
    return 0


def _tracking_uri(flag_value: str | None) -> str | None:
    """The MLflow URI to log to, or None for no MLflow: ``--tracking-uri none`` (any case), or
    neither the flag nor ``$MLFLOW_TRACKING_URI`` given."""
    from camotune.cliutil import tracking_off, tracking_uri_given

    uri = tracking_uri_given(flag_value)
    return None if not uri or tracking_off(flag_value) else uri
