"""The ``camotune`` command: a thin dispatcher onto each package's command module.

Each subcommand is imported only when it runs, so ``camotune train`` never pays for Ray or
MLflow and ``camotune --help`` answers at once.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from importlib.util import find_spec

from camotune import __version__
from camotune.cliutil import run

# subcommand -> (module, function, one-line description)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "train": ("camotune.trainer.commands", "train_main", "one two-stage training run"),
    "evaluate": ("camotune.trainer.evaluate", "evaluate_main",
                 "standard COD metrics table for a checkpoint"),
    "diagnose": ("camotune.trainer.diagnose", "diagnose_main",
                 "pre-flight checks of a training config"),
    "synth": ("camotune.trainer.synth", "synth_main",
              "write a synthetic camouflage dataset (COD10K-v3 layout)"),
    "sweep": ("camotune.commands.sweep", "sweep_main", "run a hyperparameter search"),
    "resume": ("camotune.commands.sweep", "resume_main", "continue an interrupted search"),
    "sync": ("camotune.commands.sync", "sync_main",
             "send the MLflow calls a sweep could not send (tracking outage)"),
    "results": ("camotune.results.commands", "results_main", "leaderboard, statuses, plots"),
    "export": ("camotune.results.commands", "export_main", "best (or k-th) config of a sweep"),
    "confirm": ("camotune.commands.confirm", "confirm_main",
                "rerun the leaders with several seeds and evaluate them"),
    "why": ("camotune.commands.why", "why_main",
            "which of the changes between a good and a bad run made it fail"),
    "demo": ("camotune.commands.sweep", "demo_main",
             "synthetic data, a small sweep, its leaderboard and best command"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"usage: camotune COMMAND [FLAGS]   (camotune {__version__})", "", "commands:"]
    lines += [f"  {name:<{width}}  {desc}" for name, (_, _, desc) in COMMANDS.items()]
    lines += ["", "camotune COMMAND --help shows a command's flags."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if args[0] in ("-V", "--version"):
        print(f"camotune {__version__}")
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"camotune: error: unknown command {name!r} (try: {', '.join(COMMANDS)})",
              file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    fn = getattr(importlib.import_module(module), func, None) if find_spec(module) else None
    if fn is None:
        print(f"camotune {name}: error: not implemented yet", file=sys.stderr)
        return 2
    return run(fn, rest, prog=f"camotune {name}")


if __name__ == "__main__":
    raise SystemExit(main())
