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
Ray when it starts and inherited by a local Ray's workers; a cluster's workers get them
through the job's ``runtime_env`` (`worker_env_vars`). Variables the user already set are
kept.
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


# what the processes Ray starts on other nodes need from QUIET_ENV (they do not inherit the
# driver's environment; a local Ray's workers do)
WORKER_ENV = ("TQDM_DISABLE",)


def worker_env_vars() -> dict[str, str]:
    """The ``runtime_env`` ``env_vars`` that carry the quiet settings to a cluster's workers:
    the `WORKER_ENV` variables as this process has them (none with ``--verbose``, which
    leaves them unset)."""
    return {k: os.environ[k] for k in WORKER_ENV if k in os.environ}


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
