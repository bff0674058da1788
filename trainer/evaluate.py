"""``camotune evaluate``: the standard COD metrics table of a checkpoint.

Protocol (as PySODEvalToolkit and the COD papers): the image is resized to the training side
``img_size`` exactly as in training (through the decode-once cache), the model predicts, the
logits are resized (bilinear) to the ground truth's *original* size, their sigmoid is stored
as uint8 0..255 for pysodmetrics, and sigmoid > 0.5 is the foreground that ``iou``/``dice``
score (per image, averaged: the definition training uses; see
`camotune.trainer.metrics.SODMetrics`, which also gives the library's min-max normalised
``iou_minmax``/``dice_minmax``). Inference runs in this process; the numpy metrics run in a
pool of worker processes, fed in chunks while the model predicts the next batch.

The table has one row per test set the dataset layout holds (COD10K, CAMO, CHAMELEON, NC4K,
then any other), or one row ``val`` for ``--split val``: the checkpoint's own validation
hold-out of the training images (the same seeded split), scored as training scores it,
against its masks at the checkpoint's ``--eval-size``, so ``iou``/``dice`` reproduce the
history's ``val_iou_raw``/``val_dice`` of the same weights. Never a substitute for the test
sets.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from camotune.errors import BadInput
from camotune.trainer.metrics import SOD_KEYS, SODMetrics

if TYPE_CHECKING:
    import pandas as pd
    import torch

    from camotune.trainer.config import TrainConfig
    from camotune.trainer.data import Sample

log = logging.getLogger(__name__)

TEST_SET_ORDER = ("COD10K", "CAMO", "CHAMELEON", "NC4K")
COLUMNS = ("dataset", "images", *SOD_KEYS)
HEADERS = {"dataset": "Dataset", "images": "Images", "sm": "S_alpha", "em_mean": "E_phi mean",
           "em_max": "E_phi max", "em_adp": "E_phi adp", "wfm": "F_beta^w",
           "fm_mean": "F_beta mean", "fm_max": "F_beta max", "mae": "MAE", "iou": "IoU",
           "dice": "Dice", "iou_minmax": "IoU minmax", "dice_minmax": "Dice minmax"}
CHUNK = 8  # images per unit of work sent to a metrics process


def default_workers() -> int:
    """Metric processes: the cores left beside the inference process, at most 8."""
    return max(1, min(8, (os.cpu_count() or 1) - 1))


# -- model -----------------------------------------------------------------------------------

def load_model(checkpoint: str | os.PathLike, device: torch.device
               ) -> tuple[torch.nn.Module, TrainConfig, str]:
    """The checkpoint's model in eval mode on ``device``, its config, and which weights were
    loaded (``"ema"`` when the checkpoint's ``best_weights`` says so, else ``"raw"``).

    The backbone is built without pretrained weights (they come from the checkpoint).
    The file is read with ``torch.load(..., weights_only=True)``: a crafted pickle is refused
    (BadInput) without running. Raises BadInput for a missing, unreadable or foreign file, or
    weights that do not fit the stored config.
    """
    from camotune.model import build_model
    from camotune.trainer import checkpoint as ckpt

    state = ckpt.load(checkpoint)
    cfg = ckpt.config_of(state, source=str(checkpoint))
    cfg = dataclasses.replace(cfg, pretrained=False, pretrained_path="")
    which = "ema" if state.get("best_weights") == "ema" else "raw"
    weights = state.get("ema") if which == "ema" else state["model"]
    if not isinstance(weights, dict):
        raise BadInput(f"{checkpoint}: best_weights is {which!r} but it holds no such weights")
    model = build_model(cfg)
    try:
        model.load_state_dict(_plain_keys(weights))
    except RuntimeError as exc:
        raise BadInput(f"{checkpoint}: weights do not fit the model of its config "
                       f"({str(exc).splitlines()[0]})") from None
    model.to(device).eval()
    log.info("checkpoint=%s weights=%s backbone=%s img_size=%d epoch=%s", checkpoint, which,
             cfg.backbone, cfg.img_size, state.get("epoch"))
    return model, cfg, which


def _plain_keys(weights: dict[str, Any]) -> dict[str, Any]:
    # torch.compile and DataParallel wrappers prefix every key; the bare model has none.
    for prefix in ("_orig_mod.", "module."):
        if weights and all(k.startswith(prefix) for k in weights):
            weights = {k[len(prefix):]: v for k, v in weights.items()}
    return weights


# -- prediction ------------------------------------------------------------------------------

def _original_size(path: Path) -> tuple[int, int]:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:  # reads the header only
            w, h = im.size
    except (OSError, UnidentifiedImageError, ValueError, SyntaxError) as exc:
        raise BadInput(f"{path}: unreadable or corrupt image ({exc})") from None
    return h, w


def predict(model: torch.nn.Module, samples: Sequence[Sample], *, img_size: int,
            device: torch.device, amp_dtype: torch.dtype | None = None, batch_size: int = 8,
            cache_dir: str | os.PathLike | None = None, gt_size: int | None = None
            ) -> Iterator[tuple[Sample, np.ndarray, np.ndarray]]:
    """``(sample, prediction, foreground)`` in ``samples`` order. The logits are resized
    (bilinear, align_corners=False) to the original size of ``sample.mask``, or to
    ``gt_size`` x ``gt_size`` when given; the prediction is their sigmoid as uint8 H x W
    0..255, the foreground their sigmoid > 0.5 (bool H x W). Images go through the training
    cache at ``img_size``."""
    import torch

    from camotune.trainer.data import normalize_batch
    from camotune.trainer.loaders import eval_loader
    from camotune.trainer.metrics import resize_logits
    from camotune.trainer.step import autocast

    if gt_size:
        sizes = [(gt_size, gt_size)] * len(samples)
    else:
        sizes = [_original_size(s.mask) for s in samples]
    loader = eval_loader(samples, img_size, batch_size, cache_dir=cache_dir)
    start = 0
    for images, _ in loader:
        # Everything inside the context, yield outside it: a generator suspended inside
        # inference_mode would leave the caller's code in inference mode.
        with torch.inference_mode():
            with autocast(device, amp_dtype):
                logits = model(normalize_batch(images.to(device))).logits
            logits = logits.float()
            preds = []
            for i in range(logits.shape[0]):
                lg = resize_logits(logits[i : i + 1], sizes[start + i])[0, 0]
                prob = (torch.sigmoid(lg) * 255).round_().to(torch.uint8).cpu().numpy()
                preds.append((prob, (lg > 0).cpu().numpy()))
        for sample, (prob, fg) in zip(samples[start : start + len(preds)], preds, strict=True):
            yield sample, prob, fg
        start += len(preds)


def _score_chunk(items: list[tuple[np.ndarray, np.ndarray, str | np.ndarray]]) -> SODMetrics:
    """Worker-process unit: score each (prediction, foreground, ground truth); the ground
    truth is a mask file (read as its grey levels: > 128 is the object, the rule `read_mask`
    applies too) or a {0, 1} array. A worker imports neither torch nor the data module."""
    from PIL import Image

    from camotune.trainer.masks import mask_levels

    metrics = SODMetrics()
    for pred, fg, gt in items:
        if isinstance(gt, str):
            with Image.open(gt) as im:
                gt = mask_levels(im)
        metrics.step(pred, gt, fg=fg)
    return metrics


def score_samples(model: torch.nn.Module, samples: Sequence[Sample], *, name: str,
                  img_size: int, device: torch.device, amp_dtype: torch.dtype | None = None,
                  batch_size: int = 8, pool: Executor | None = None, max_pending: int = 4,
                  cache_dir: str | os.PathLike | None = None,
                  eval_size: int | None = None) -> dict[str, float]:
    """`SODMetrics.results` of ``model`` on ``samples``. ``pool``: where the metrics run
    (None = in this process); at most ``max_pending`` chunks wait for it, which bounds the
    predictions held in memory. ``eval_size``: score against the masks decoded at that side
    through the cache, as training validation does (None = the original mask files, the
    published protocol). The progress bar counts scored images."""
    from tqdm import tqdm

    gts: Sequence[Any] = [str(s.mask) for s in samples]
    if eval_size:
        from camotune.trainer.cache import load_split

        _, gts = load_split(samples, eval_size, cache_dir)

    total = SODMetrics()
    pending: deque[Future] = deque()
    bar = tqdm(total=len(samples), desc=name, unit="img", file=sys.stderr, leave=False)

    def absorb(part: SODMetrics) -> None:
        total.merge(part)
        bar.update(part.images)

    def submit(chunk: list[tuple[np.ndarray, np.ndarray, Any]]) -> None:
        if pool is None:
            absorb(_score_chunk(chunk))
            return
        pending.append(pool.submit(_score_chunk, chunk))
        while len(pending) > max_pending:
            absorb(pending.popleft().result())

    chunk: list[tuple[np.ndarray, np.ndarray, Any]] = []
    with bar:
        for i, (_, pred, fg) in enumerate(predict(
                model, samples, img_size=img_size, device=device, amp_dtype=amp_dtype,
                batch_size=batch_size, cache_dir=cache_dir, gt_size=eval_size)):
            gt = gts[i] if isinstance(gts[i], str) else np.array(gts[i])
            chunk.append((pred, fg, gt))
            if len(chunk) == CHUNK:
                submit(chunk)
                chunk = []
        if chunk:
            submit(chunk)
        while pending:
            absorb(pending.popleft().result())
    return total.results()


# -- the table -------------------------------------------------------------------------------

def _val_set(dataset_path: str | os.PathLike, val_fraction: float) -> dict[str, list[Sample]]:
    from camotune.trainer.data import find_train
    from camotune.trainer.loaders import split_train_val

    _, val = split_train_val(find_train(dataset_path), val_fraction)
    return {"val": val}


def _test_sets(dataset_path: str | os.PathLike) -> dict[str, list[Sample]]:
    from camotune.trainer.data import find_test_sets

    sets = find_test_sets(dataset_path)
    if not sets:
        raise BadInput(f"--dataset-path {dataset_path}: no test set found (expected Test/Image "
                       "+ Test/GT_Object, TestDataset/<NAME>/{Imgs,GT} or CAMO's Images/Test)")
    known = [n for n in TEST_SET_ORDER if n in sets]
    return {n: sets[n] for n in known + sorted(set(sets) - set(known))}


def evaluate_checkpoint(checkpoint: str | os.PathLike, dataset_path: str | os.PathLike, *,
                        split: str = "test", device: str = "auto", batch_size: int = 8,
                        workers: int | None = None,
                        cache_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """The COD metrics of ``checkpoint`` on ``dataset_path``: one row per test set (or one row
    ``val``), columns `COLUMNS` (``dataset``, ``images``, then the `SOD_KEYS`).

    ``workers``: metric processes (0 = all in this process; None = `default_workers`).
    ``cache_dir``: the decoded-image cache (None = ``$CAMOTUNE_CACHE`` or ~/.cache/camotune).
    Raises BadInput for a missing checkpoint or dataset, a layout without test sets, or
    a bad option.
    """
    import multiprocessing

    import pandas as pd

    from camotune.trainer.step import resolve_amp, resolve_device

    if split not in ("test", "val"):
        raise BadInput(f"--split must be test or val (got {split!r})")
    if batch_size < 1:
        raise BadInput(f"--batch-size must be >= 1 (got {batch_size})")
    workers = default_workers() if workers is None else workers
    if workers < 0:
        raise BadInput(f"--workers must be >= 0 (got {workers})")
    if not Path(checkpoint).is_file():
        raise BadInput(f"--checkpoint {checkpoint}: no such file")
    if not Path(dataset_path).is_dir():
        raise BadInput(f"--dataset-path {dataset_path}: no such folder")
    dev = resolve_device(device)
    sets = _test_sets(dataset_path) if split == "test" else {}  # before the slow part
    model, cfg, _ = load_model(checkpoint, dev)
    if split == "val":  # the hold-out depends on the checkpoint's --val-fraction
        sets = _val_set(dataset_path, cfg.val_fraction)
    amp_dtype = resolve_amp(cfg.amp, dev)
    log.info("evaluate split=%s sets=%s device=%s amp=%s workers=%d", split,
             ",".join(f"{k}:{len(v)}" for k, v in sets.items()), dev, amp_dtype, workers)

    # spawn, not fork: the parent holds torch threads (and maybe CUDA), which a fork copies
    # in an undefined state; the workers only need numpy and pysodmetrics.
    pool_cm = (ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
               if workers > 0 else nullcontext(None))
    rows = []
    with pool_cm as pool:
        for name, samples in sets.items():
            r = score_samples(model, samples, name=name, img_size=cfg.img_size, device=dev,
                              amp_dtype=amp_dtype, batch_size=batch_size, pool=pool,
                              max_pending=2 * workers, cache_dir=cache_dir,
                              eval_size=cfg.eval_size if split == "val" else None)
            rows.append({"dataset": name, **r})
            log.info("dataset=%s %s", name,
                     " ".join(f"{k}={r[k]:.4f}" for k in SOD_KEYS))
    return pd.DataFrame(rows, columns=list(COLUMNS))


def format_table(table: pd.DataFrame) -> str:
    """The table as the COD papers print it: three decimals, one row per dataset."""
    shown = table.rename(columns=HEADERS)
    return shown.to_string(index=False, float_format=lambda v: f"{v:.3f}")


# -- command line ----------------------------------------------------------------------------

def evaluate_parser() -> Any:
    from camotune.cliutil import Parser

    p = Parser(prog="camotune evaluate",
               description="Standard COD metrics of a checkpoint on the test sets "
                           "(table on stdout, CSV written, logs on stderr).")
    p.add_argument("--checkpoint", required=True, help="a best.pt or last.pt")
    p.add_argument("--dataset-path", required=True, help="dataset root (any supported layout)")
    p.add_argument("--split", choices=("test", "val"), default="test",
                   help="the test sets (masks at their original size), or the checkpoint's "
                        "validation hold-out scored as in training, against masks at its "
                        "--eval-size (default test)")
    p.add_argument("--output", default="",
                   help="CSV file (default: eval_<split>.csv next to the checkpoint)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--batch-size", type=int, default=8, help="images per forward pass")
    p.add_argument("--workers", type=int, default=None,
                   help="metric processes (0 = none; default: cores - 1, at most 8)")
    p.add_argument("--cache-dir", default="",
                   help="decoded-image cache (default: $CAMOTUNE_CACHE or ~/.cache/camotune)")
    return p


def evaluate_main(argv: Sequence[str]) -> int:
    """``camotune evaluate``: print the table, write the CSV; BadInput (exit 2) on bad input."""
    from camotune.cliutil import setup_logging

    args = evaluate_parser().parse_args(list(argv))
    setup_logging()
    output = Path(args.output or Path(args.checkpoint).parent / f"eval_{args.split}.csv")
    if not output.parent.is_dir():  # checked first: a long evaluation must not be lost
        raise BadInput(f"--output {output}: folder {output.parent} does not exist")
    table = evaluate_checkpoint(args.checkpoint, args.dataset_path, split=args.split,
                                device=args.device, batch_size=args.batch_size,
                                workers=args.workers, cache_dir=args.cache_dir or None)
    print(format_table(table), flush=True)
    try:
        table.to_csv(output, index=False)
    except OSError as exc:
        raise BadInput(f"--output {output}: cannot write ({exc.strerror})") from None
    log.info("wrote %s", output)
    return 0
