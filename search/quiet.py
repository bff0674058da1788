"""Third-party chatter a sweep hides unless ``--verbose``.

Without ``--verbose``: Ray Tune's own console output (its "Configuration for experiment" box,
"View detailed results here" and TensorBoard hint, all on stdout) is off
(``RAY_AIR_NEW_OUTPUT=0`` with ``verbose=0`` prints nothing); Ray's "Token authentication is
enabled" warning for a local cluster, Optuna's "A new study created" and MLflow's
database-migration lines (alembic) are filtered by log level. Trials' own logs reach the
driver without Ray's coloured ``(pid=...)`` prefixes' colours (``RAY_COLOR_PREFIX=0``) and
tqdm bars are off in Ray workers (``TQDM_DISABLE=1``): camotune's trials report through
``trials.jsonl`` and the progress table instead.

Call `quiet_third_party` before Ray is initialised: the environment variables are read by
Ray when it starts and inherited by its workers. Variables the user already set are kept.
"""

from __future__ import annotations

import logging
import os

# logger -> the level below which its records are dropped without --verbose
QUIET_LOGGERS = {
    "ray._private.authentication.authentication_token_setup": logging.ERROR,
    "ray.tune": logging.WARNING,
    "ray.train": logging.WARNING,
    "optuna": logging.WARNING,
    "alembic": logging.WARNING,
    "mlflow.store.db.utils": logging.WARNING,
    "mlflow.tracking.fluent": logging.WARNING,
}

QUIET_ENV = {
    "RAY_AIR_NEW_OUTPUT": "0",
    "RAY_COLOR_PREFIX": "0",
    "TQDM_DISABLE": "1",
}


def quiet_third_party(verbose: bool = False) -> None:
    """Turn off Ray's, Optuna's and MLflow's console chatter (see the module docstring);
    with ``verbose`` leave everything as the libraries have it."""
    if verbose:
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    try:
        import optuna
    except ImportError:
        pass
    else:
        # Optuna sets its own level when first imported: set ours after that.
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    for name, level in QUIET_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
