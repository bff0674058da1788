"""torch Dataset / DataLoader plumbing over the decode-once cache.

Reproducibility rule: which images an epoch visits, in which order, and how each one is
augmented depend only on (seed, epoch, index) — never on the worker count, worker seeds or any
global RNG — so a run resumed at epoch k sees exactly the data it would have seen.

* `split_train_val`: the validation split is seeded by the training file *names*, not by the
  training seed, so trials with different seeds are compared on the same validation images.
* `EpochSampler` yields ``(index, sample_seed)`` pairs; `CachedDataset` takes such a pair.
* `DataModule` (or `build_loaders`) decodes the training images once, splits them and hands
  out a loader per epoch: ``train_loader(epoch, batch_size)``, ``val_loader(batch_size)``.
  Batches are ``(uint8 B x S x S x 3, uint8 B x S x S)`` tensors (masks in {0, 1}); use
  `camotune.trainer.data.normalize_batch` / `masks_to_float` on the training device.
  ``val_eval_loader(batch_size)`` adds the validation masks at the evaluation size E
  (``--eval-size``, cached once like the training images): ``(images S, masks S, masks E)``,
  so validation scores every trial against the same ground truth whatever its image size.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing as mp
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from camotune.errors import BadInput
from camotune.trainer.augment import apply, build_augment
from camotune.trainer.cache import load_split
from camotune.trainer.data import Sample, find_train

log = logging.getLogger(__name__)


def split_train_val(
    samples: Sequence[Sample], val_fraction: float
) -> tuple[list[Sample], list[Sample]]:
    """Seeded split into (train, val), both sorted by name.

    The permutation's seed is a hash of the sorted file names, so the split is the same for
    every training seed and wherever the dataset folder lives. ``round(n * val_fraction)``
    images are held out, clamped so that each side keeps at least one. Raises BadInput with
    fewer than 2 images or a fraction outside (0, 1).
    """
    n = len(samples)
    if not 0.0 < val_fraction < 1.0:
        raise BadInput(f"--val-fraction must lie strictly between 0 and 1 (got {val_fraction})")
    if n < 2:
        raise BadInput(f"need at least 2 training images to hold out a validation split, got {n}")
    ordered = sorted(samples, key=lambda s: s.name)
    digest = hashlib.sha256("\n".join(s.name for s in ordered).encode()).digest()
    order = np.random.default_rng(int.from_bytes(digest[:8], "little")).permutation(n)
    n_val = min(max(1, round(n * val_fraction)), n - 1)
    val = sorted(order[:n_val].tolist())
    train = sorted(order[n_val:].tolist())
    return [ordered[i] for i in train], [ordered[i] for i in val]


class EpochSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, sample_seed)`` for one epoch of ``n`` items.

    With ``shuffle`` the order is a permutation drawn from (seed, epoch); otherwise 0..n-1.
    ``sample_seed`` (the augmentation seed) is drawn from (seed, epoch) per *index*, so it is
    the same whatever the order or sharding. For DDP each rank takes every ``world_size``-th
    position. With ``pad`` (for training) the order is first padded by repeating its start up
    to a multiple of ``world_size`` (as torch's DistributedSampler does), so every rank runs the
    same number of batches and at most ``world_size - 1`` images are seen twice an epoch;
    without it (for validation) the shards are disjoint and together hold every item once.
    """

    def __init__(self, n: int, *, seed: int, epoch: int, shuffle: bool, rank: int = 0,
                 world_size: int = 1, pad: bool = True) -> None:
        if n < 1:
            raise ValueError("EpochSampler needs n >= 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        self.n, self.seed, self.epoch, self.shuffle = n, seed, epoch, shuffle
        self.rank, self.world_size, self.pad = rank, world_size, pad

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.pad:
            return -(-self.n // self.world_size)
        return len(range(self.rank, self.n, self.world_size))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        # Two independent streams of one SeedSequence: order, and per-index seeds.
        order_ss, seed_ss = np.random.SeedSequence([self.seed, self.epoch]).spawn(2)
        if self.shuffle:
            order = np.random.default_rng(order_ss).permutation(self.n)
        else:
            order = np.arange(self.n)
        seeds = np.random.default_rng(seed_ss).integers(0, 2**31 - 1, self.n)
        if self.pad:
            total = -(-self.n // self.world_size) * self.world_size
            order = np.concatenate([order, order[: total - self.n]])
        for i in order[self.rank :: self.world_size].tolist():
            yield i, int(seeds[i])


class CachedDataset(Dataset):
    """Rows ``rows`` of the cached arrays; item ``(i, seed)`` -> (uint8 S x S x 3 image,
    uint8 S x S mask) tensors, augmented with ``seed`` when ``aug_strength`` > 0.

    Worker processes reopen the memory maps by file name instead of copying the arrays.
    """

    def __init__(self, images: np.memmap, masks: np.memmap, rows: Sequence[int], *,
                 aug_strength: float = 0.0) -> None:
        self.images, self.masks = images, masks
        self.rows = np.asarray(rows, dtype=np.int64)
        self.aug_strength = aug_strength
        self.pipeline = build_augment(aug_strength)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        i, seed = item
        row = self.rows[i]
        image, mask = np.array(self.images[row]), np.array(self.masks[row])
        image, mask = apply(self.pipeline, image, mask, seed)
        return torch.from_numpy(image), torch.from_numpy(mask)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["images"] = str(self.images.filename)
        state["masks"] = str(self.masks.filename)
        del state["pipeline"]  # rebuilt from aug_strength
        return state

    def __setstate__(self, state: dict) -> None:
        state["images"] = np.load(state["images"], mmap_mode="r")
        state["masks"] = np.load(state["masks"], mmap_mode="r")
        state["pipeline"] = build_augment(state["aug_strength"])
        self.__dict__.update(state)


class ValidationDataset(Dataset):
    """Validation items ``(i, seed)`` -> (uint8 S x S x 3 image, uint8 S x S mask, uint8 E x E
    mask): the image and mask at the training side S, and the mask at the evaluation side E
    (the same array when E = S). Never augmented; ``seed`` is ignored."""

    def __init__(self, images: np.memmap, masks: np.memmap, rows: Sequence[int],
                 eval_masks: np.memmap, eval_rows: Sequence[int]) -> None:
        self.images, self.masks, self.eval_masks = images, masks, eval_masks
        self.rows = np.asarray(rows, dtype=np.int64)
        self.eval_rows = np.asarray(eval_rows, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, item: tuple[int, int]) -> tuple[torch.Tensor, ...]:
        i, _ = item
        row, eval_row = self.rows[i], self.eval_rows[i]
        return (torch.from_numpy(np.array(self.images[row])),
                torch.from_numpy(np.array(self.masks[row])),
                torch.from_numpy(np.array(self.eval_masks[eval_row])))


def _worker_init(_: int) -> None:
    # OpenCV (albumentations) would start a thread pool per worker: one thread each is enough.
    import cv2

    cv2.setNumThreads(1)


def _worker_context() -> mp.context.BaseContext:
    """Workers come from a clean forkserver process, not forked from this one: a fork inherits
    thread pools without their threads (OpenCV's, once this process has run an augmentation
    or a metric), and the worker then hangs on their locks. The server preloads torch and
    albumentations once, so each worker starts in a fraction of a second."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload(["camotune.trainer.loaders", "albumentations"])
    return ctx


class DataModule:
    """Training data of one run: the cached training split, its validation hold-out, and
    per-epoch loaders. Decoding happens once in the constructor (or not at all on a cache hit).

    Attributes: ``n_train``, ``n_val``, ``train_samples``, ``val_samples`` (sorted by name,
    the order of `val_loader`'s batches), ``train_images_per_epoch`` (this rank's, padding
    included), ``eval_size`` (the side of the validation masks the metrics use; ``eval_size``
    None means ``img_size``).
    """

    def __init__(self, dataset_path: str | Path, *, img_size: int, val_fraction: float,
                 num_workers: int = 0, seed: int = 0, aug_strength: float = 1.0,
                 cache_dir: str | Path | None = None, rank: int = 0, world_size: int = 1,
                 pin_memory: bool = False, eval_size: int | None = None) -> None:
        samples = find_train(dataset_path)
        self.train_samples, self.val_samples = split_train_val(samples, val_fraction)
        images, masks = load_split(samples, img_size, cache_dir)
        index = {s.name: i for i, s in enumerate(samples)}
        val_rows = [index[s.name] for s in self.val_samples]
        self.train_set = CachedDataset(images, masks, [index[s.name] for s in self.train_samples],
                                       aug_strength=aug_strength)
        self.val_set = CachedDataset(images, masks, val_rows)
        self.eval_size = eval_size or img_size
        if self.eval_size == img_size:
            eval_masks, eval_rows = masks, val_rows
        else:  # the validation samples once more, at the evaluation size (its own cache entry)
            _, eval_masks = load_split(self.val_samples, self.eval_size, cache_dir)
            eval_rows = list(range(len(self.val_samples)))
        self.val_eval_set = ValidationDataset(images, masks, val_rows, eval_masks, eval_rows)
        self.img_size, self.seed = img_size, seed
        self.num_workers, self.rank, self.world_size = num_workers, rank, world_size
        self.pin_memory = pin_memory and torch.cuda.is_available()
        self._train: DataLoader | None = None
        log.info("data n_train=%d n_val=%d img_size=%d eval_size=%d aug_strength=%s",
                 self.n_train, self.n_val, img_size, self.eval_size, aug_strength)

    @classmethod
    def from_config(cls, cfg: Any, *, rank: int = 0, world_size: int = 1,
                    pin_memory: bool = False) -> DataModule:
        """The data of a `TrainConfig`: its dataset_path, img_size, eval_size, val_fraction,
        num_workers, seed, aug_strength and cache_dir ("" = default)."""
        return cls(cfg.dataset_path, img_size=cfg.img_size, val_fraction=cfg.val_fraction,
                   num_workers=cfg.num_workers, seed=cfg.seed, aug_strength=cfg.aug_strength,
                   cache_dir=cfg.cache_dir or None, rank=rank, world_size=world_size,
                   pin_memory=pin_memory, eval_size=cfg.eval_size)

    @property
    def train_images_per_epoch(self) -> int:
        """Images this rank trains on per epoch (the padded shard of `EpochSampler`)."""
        return -(-self.n_train // self.world_size)

    @property
    def n_train(self) -> int:
        return len(self.train_samples)

    @property
    def n_val(self) -> int:
        return len(self.val_samples)

    def train_loader(self, epoch: int, batch_size: int) -> DataLoader:
        """The shuffled, augmented loader of ``epoch`` for this rank; the last batch may be
        partial. Worker processes persist across epochs of one batch size."""
        loader = self._train
        if loader is None or loader.batch_size != batch_size:
            self._train = None  # let the previous loader's workers go first
            sampler = EpochSampler(self.n_train, seed=self.seed, epoch=epoch, shuffle=True,
                                   rank=self.rank, world_size=self.world_size)
            loader = self._loader(self.train_set, sampler, batch_size, self.num_workers)
            self._train = loader
        loader.sampler.set_epoch(epoch)
        return loader

    def val_loader(self, batch_size: int) -> DataLoader:
        """Validation images, never augmented, in `val_samples` order. Under DDP each rank gets
        every ``world_size``-th image (no padding): summed over ranks, each image counts once.
        Loaded in this process: reading the cache is a memory copy, cheaper than workers."""
        sampler = EpochSampler(self.n_val, seed=self.seed, epoch=0, shuffle=False,
                               rank=self.rank, world_size=self.world_size, pad=False)
        return self._loader(self.val_set, sampler, batch_size, 0)

    def val_eval_loader(self, batch_size: int) -> DataLoader:
        """As `val_loader`, each batch ``(uint8 images B x S x S x 3, uint8 masks B x S x S,
        uint8 masks B x E x E)``: the masks at the training side (for the loss) and at
        `eval_size` (for the metrics)."""
        sampler = EpochSampler(self.n_val, seed=self.seed, epoch=0, shuffle=False,
                               rank=self.rank, world_size=self.world_size, pad=False)
        return self._loader(self.val_eval_set, sampler, batch_size, 0)

    def _loader(self, dataset: Dataset, sampler: EpochSampler, batch_size: int,
                workers: int) -> DataLoader:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        return DataLoader(
            dataset, batch_size=batch_size, sampler=sampler, drop_last=False,
            num_workers=workers, pin_memory=self.pin_memory, persistent_workers=workers > 0,
            worker_init_fn=_worker_init if workers > 0 else None,
            multiprocessing_context=_worker_context() if workers > 0 else None,
            # A private generator: DataLoader would otherwise draw worker seeds from the
            # global torch RNG and shift the training RNG stream with the epoch count.
            generator=torch.Generator().manual_seed(self.seed),
        )


def build_loaders(dataset_path: str | Path, *, img_size: int, val_fraction: float,
                  num_workers: int = 0, seed: int = 0, aug_strength: float = 1.0,
                  cache_dir: str | Path | None = None, rank: int = 0, world_size: int = 1,
                  pin_memory: bool = False) -> DataModule:
    """The `DataModule` of a training run, from plain values (``cache_dir`` "" = default)."""
    return DataModule(dataset_path, img_size=img_size, val_fraction=val_fraction,
                      num_workers=num_workers, seed=seed, aug_strength=aug_strength,
                      cache_dir=cache_dir or None, rank=rank, world_size=world_size,
                      pin_memory=pin_memory)


def eval_loader(samples: Sequence[Sample], img_size: int, batch_size: int, *,
                cache_dir: str | Path | None = None) -> DataLoader:
    """Unaugmented batches of any sample list (e.g. a test set) in the given order, through
    the same cache; for metrics at the original resolution read ``sample.mask`` itself."""
    images, masks = load_split(samples, img_size, cache_dir or None)
    dataset = CachedDataset(images, masks, range(len(samples)))
    sampler = EpochSampler(len(samples), seed=0, epoch=0, shuffle=False)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, drop_last=False,
                      generator=torch.Generator().manual_seed(0))
