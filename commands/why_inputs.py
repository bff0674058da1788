"""Reading `camotune why`'s good and bad runs: a quoted ``camotune train ...`` line, a run's
``command.txt`` or its ``config.yaml``, and the flags common to both (``--common``)."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path

from camotune.errors import BadInput
from camotune.trainer.config import TrainConfig, from_argv, load_yaml

__all__ = ["read_run", "with_common"]


def _argv(text: str, where: str) -> list[str]:
    try:
        argv = shlex.split(text, comments=False)
    except ValueError as exc:
        raise BadInput(f"{where}: cannot split the command line ({exc})") from None
    if argv[:1] == ["camotune"]:
        argv = argv[1:]
    if argv[:1] == ["train"]:
        argv = argv[1:]
    return argv


def _is_file(path: Path) -> bool:
    try:
        return path.is_file()
    except OSError:  # a command line too long to be a file name
        return False


def read_run(value: str, which: str) -> TrainConfig:
    """The config of ``--good``/``--bad`` (``which``) ``value``: a ``config.yaml`` (read with
    the trainer's YAML loader), a file holding a ``camotune train ...`` line (``command.txt``),
    or the line itself, with or without the leading ``camotune train``. Unknown flags, bad
    values and unreadable files raise BadInput naming ``--<which>``."""
    where = f"--{which}"
    path = Path(value).expanduser()
    looks_like_file = "\n" not in value and not value.lstrip().startswith("-") and \
        not value.lstrip().startswith("camotune ") and (
            path.suffix in (".yaml", ".yml", ".txt") or _is_file(path))
    try:
        if looks_like_file:
            if not path.is_file():
                raise BadInput(f"file not found: {value}")
            if path.suffix in (".yaml", ".yml"):
                return load_yaml(str(path))
            text = path.read_text(errors="strict").strip()
            if not text:
                raise BadInput(f"{value} is empty")
            return from_argv(_argv(text.splitlines()[0], where))
        argv = _argv(value, where)
        if not argv:
            raise BadInput("empty command line")
        return from_argv(argv)
    except UnicodeDecodeError:
        raise BadInput(f"{where}: {value} is not a text file") from None
    except BadInput as exc:
        raise BadInput(f"{where}: {exc}") from None


def with_common(cfg: TrainConfig, common: str | None, dataset_path: str) -> TrainConfig:
    """``cfg`` with the ``--common`` training flags laid over it and the dataset set."""
    if common:
        try:
            cfg = from_argv(_argv(common, "--common"), base=cfg)
        except BadInput as exc:
            raise BadInput(f"--common: {exc}") from None
    return dataclasses.replace(cfg, dataset_path=dataset_path)
