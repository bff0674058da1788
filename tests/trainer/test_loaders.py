"""Validation split, the epoch sampler and the per-epoch loaders."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from camotune.errors import BadInput
from camotune.trainer.data import Sample, find_train
from camotune.trainer.loaders import (
    CachedDataset,
    DataModule,
    EpochSampler,
    build_loaders,
    eval_loader,
    split_train_val,
)


def fake_samples(n: int) -> list[Sample]:
    return [Sample(Path(f"/d/{i:03d}.jpg"), Path(f"/d/{i:03d}.png"), f"{i:03d}") for i in range(n)]


# -- validation split -------------------------------------------------------------------------

def test_split_is_seeded_by_the_file_list_only() -> None:
    samples = fake_samples(50)
    train, val = split_train_val(samples, 0.2)
    assert len(val) == 10 and len(train) == 40
    assert {s.name for s in train} | {s.name for s in val} == {s.name for s in samples}
    assert not {s.name for s in train} & {s.name for s in val}
    assert [s.name for s in val] == sorted(s.name for s in val)
    # same split from a shuffled list and from another folder with the same names
    moved = [Sample(Path("/elsewhere") / s.image.name, s.mask, s.name) for s in samples[::-1]]
    assert [s.name for s in split_train_val(moved, 0.2)[1]] == [s.name for s in val]
    # another file list gives another split
    other = split_train_val(fake_samples(51), 0.2)[1]
    assert [s.name for s in other] != [s.name for s in val]


@pytest.mark.parametrize("fraction", [0.01, 0.5, 0.99])
def test_split_keeps_one_image_each_side(fraction: float) -> None:
    train, val = split_train_val(fake_samples(2), fraction)
    assert len(train) == 1 and len(val) == 1


def test_split_needs_two_images() -> None:
    with pytest.raises(BadInput, match="at least 2 training images"):
        split_train_val(fake_samples(1), 0.1)


# -- sampler ---------------------------------------------------------------------------------

def test_sampler_depends_only_on_seed_and_epoch() -> None:
    a = list(EpochSampler(20, seed=3, epoch=5, shuffle=True))
    assert a == list(EpochSampler(20, seed=3, epoch=5, shuffle=True))
    assert sorted(i for i, _ in a) == list(range(20))
    assert [i for i, _ in a] != [i for i, _ in EpochSampler(20, seed=3, epoch=6, shuffle=True)]
    assert a != list(EpochSampler(20, seed=4, epoch=5, shuffle=True))
    # an index keeps its augmentation seed whatever the order
    ordered = dict(EpochSampler(20, seed=3, epoch=5, shuffle=False))
    assert dict(a) == ordered
    assert len(set(ordered.values())) == 20


def test_sampler_set_epoch_equals_a_fresh_sampler() -> None:
    sampler = EpochSampler(9, seed=1, epoch=1, shuffle=True)
    sampler.set_epoch(4)
    assert list(sampler) == list(EpochSampler(9, seed=1, epoch=4, shuffle=True))


def test_sampler_shards_with_padding() -> None:
    full = [i for i, _ in EpochSampler(10, seed=0, epoch=2, shuffle=True)]
    shards = [list(EpochSampler(10, seed=0, epoch=2, shuffle=True, rank=r, world_size=3))
              for r in range(3)]
    assert [len(s) for s in shards] == [4, 4, 4]
    assert len(EpochSampler(10, seed=0, epoch=2, shuffle=True, world_size=3)) == 4
    seen = [i for shard in shards for i, _ in shard]
    assert set(seen) == set(range(10))
    assert sorted(seen) == sorted(full + full[:2])  # padded with the order's start


def test_sampler_without_padding_covers_each_item_once() -> None:
    shards = [list(EpochSampler(10, seed=0, epoch=0, shuffle=False, rank=r, world_size=3,
                                pad=False)) for r in range(3)]
    assert [len(s) for s in shards] == [4, 3, 3]
    assert sorted(i for shard in shards for i, _ in shard) == list(range(10))
    assert len(EpochSampler(10, seed=0, epoch=0, shuffle=False, rank=2, world_size=3,
                            pad=False)) == 3


# -- datasets and loaders on real files --------------------------------------------------------

@pytest.fixture
def data(synth_dataset: Path, tmp_path: Path) -> DataModule:
    return build_loaders(synth_dataset, img_size=32, val_fraction=0.25, num_workers=0, seed=7,
                         aug_strength=1.0, cache_dir=str(tmp_path / "cache"))


def collect(loader) -> tuple[torch.Tensor, torch.Tensor]:
    batches = list(loader)
    return torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])


def test_datamodule_splits_training_images(data: DataModule, synth_dataset: Path) -> None:
    assert data.n_train == 18 and data.n_val == 6
    names = {s.name for s in find_train(synth_dataset)}
    assert {s.name for s in data.train_samples} | {s.name for s in data.val_samples} == names
    assert [s.name for s in data.val_samples] == sorted(s.name for s in data.val_samples)


def test_from_config_and_ddp_shards(synth_dataset: Path, tmp_path: Path) -> None:
    from camotune.trainer.config import TrainConfig

    cfg = TrainConfig(dataset_path=str(synth_dataset), backbone="edgenext_xx_small",
                      img_size=32, val_fraction=0.25, num_workers=0, seed=7,
                      cache_dir=str(tmp_path))
    ranks = [DataModule.from_config(cfg, rank=r, world_size=4) for r in range(4)]
    assert all(d.train_images_per_epoch == 5 for d in ranks)  # 18 images padded to 20
    assert [len(collect(d.train_loader(1, 2))[0]) for d in ranks] == [5, 5, 5, 5]
    val = [len(collect(d.val_loader(4))[0]) for d in ranks]
    assert val == [2, 2, 1, 1] and sum(val) == ranks[0].n_val


def test_batches_are_uint8_with_a_partial_last_batch(data: DataModule) -> None:
    batches = list(data.train_loader(epoch=1, batch_size=4))
    assert [b[0].shape[0] for b in batches] == [4, 4, 4, 4, 2]
    images, masks = batches[0]
    assert images.shape == (4, 32, 32, 3) and images.dtype == torch.uint8
    assert masks.shape == (4, 32, 32) and masks.dtype == torch.uint8
    assert set(torch.unique(masks).tolist()) <= {0, 1}


def test_batch_of_one(data: DataModule) -> None:
    batches = list(data.train_loader(epoch=1, batch_size=1))
    assert len(batches) == 18 and batches[0][0].shape == (1, 32, 32, 3)
    assert len(list(data.val_loader(batch_size=1))) == 6


def test_validation_is_never_augmented_and_ordered(data: DataModule) -> None:
    from camotune.trainer.cache import decode_pair

    images, masks = collect(data.val_loader(batch_size=4))
    for i, sample in enumerate(data.val_samples):
        image, mask = decode_pair(sample, 32)
        assert torch.equal(images[i], torch.from_numpy(image))
        assert torch.equal(masks[i], torch.from_numpy(mask))


def test_training_is_augmented_only_when_asked(synth_dataset: Path, tmp_path: Path) -> None:
    plain = build_loaders(synth_dataset, img_size=32, val_fraction=0.25, seed=7,
                          aug_strength=0.0, cache_dir=str(tmp_path))
    strong = build_loaders(synth_dataset, img_size=32, val_fraction=0.25, seed=7,
                           aug_strength=2.0, cache_dir=str(tmp_path))
    a = collect(plain.train_loader(epoch=1, batch_size=5))
    b = collect(strong.train_loader(epoch=1, batch_size=5))
    order = [i for i, _ in EpochSampler(18, seed=7, epoch=1, shuffle=True)]
    rows = plain.train_set.rows[order]
    assert torch.equal(a[0], torch.from_numpy(np.asarray(plain.train_set.images[rows])))
    assert not torch.equal(a[0], b[0])
    assert set(torch.unique(b[1]).tolist()) <= {0, 1}


def test_epochs_are_reproducible_and_resumable(data: DataModule, synth_dataset: Path,
                                               tmp_path: Path) -> None:
    for epoch in (1, 2):
        list(data.train_loader(epoch=epoch, batch_size=4))
    third = collect(data.train_loader(epoch=3, batch_size=4))
    fresh = build_loaders(synth_dataset, img_size=32, val_fraction=0.25, seed=7,
                          aug_strength=1.0, cache_dir=str(tmp_path / "cache"))
    resumed = collect(fresh.train_loader(epoch=3, batch_size=4))
    assert torch.equal(third[0], resumed[0]) and torch.equal(third[1], resumed[1])
    assert not torch.equal(third[0], collect(data.train_loader(epoch=4, batch_size=4))[0])


def test_loading_leaves_the_global_rng_alone(data: DataModule) -> None:
    torch.manual_seed(0)
    state = torch.get_rng_state()
    np_state = np.random.get_state()[1].copy()
    list(data.train_loader(epoch=1, batch_size=4))
    assert torch.equal(torch.get_rng_state(), state)
    assert (np.random.get_state()[1] == np_state).all()


def test_dataset_pickles_by_file_name(data: DataModule) -> None:
    blob = pickle.dumps(data.train_set)
    assert len(blob) < 2_000  # neither the arrays nor the pipeline are copied
    clone: CachedDataset = pickle.loads(blob)
    for item in [(0, 5), (17, 9)]:
        assert all(torch.equal(x, y) for x, y in zip(clone[item], data.train_set[item],
                                                     strict=True))


def test_eval_loader_keeps_the_given_order(synth_dataset: Path, tmp_path: Path) -> None:
    from camotune.trainer.data import find_test_sets

    samples = find_test_sets(synth_dataset)["COD10K"]
    images, masks = collect(eval_loader(samples, 32, 3, cache_dir=tmp_path))
    assert images.shape == (8, 32, 32, 3) and masks.shape == (8, 32, 32)


@pytest.mark.slow
def test_worker_count_does_not_change_the_data(synth_dataset: Path, tmp_path: Path) -> None:
    kwargs = dict(img_size=32, val_fraction=0.25, seed=11, aug_strength=1.0,
                  cache_dir=str(tmp_path))
    single = build_loaders(synth_dataset, num_workers=0, **kwargs)
    double = build_loaders(synth_dataset, num_workers=2, **kwargs)
    for epoch in (1, 2):  # the second epoch reuses the persistent workers
        a = collect(single.train_loader(epoch=epoch, batch_size=4))
        b = collect(double.train_loader(epoch=epoch, batch_size=4))
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    # a new batch size (stage 2) gets its own loader with the same per-sample data
    a = collect(single.train_loader(epoch=3, batch_size=5))
    b = collect(double.train_loader(epoch=3, batch_size=5))
    assert torch.equal(a[0], b[0])


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_workers_start_after_this_process_ran_opencv_threads(synth_dataset: Path,
                                                             tmp_path: Path) -> None:
    """Forked workers used to hang on the locks of OpenCV's thread pool inherited from here."""
    import cv2

    before = cv2.getNumThreads()
    cv2.setNumThreads(2)
    try:
        big = np.zeros((2048, 2048, 3), np.uint8)
        cv2.warpAffine(big, np.eye(2, 3), (2048, 2048))  # starts OpenCV's pool in this process
        data = build_loaders(synth_dataset, img_size=32, val_fraction=0.25, seed=1,
                             num_workers=2, cache_dir=str(tmp_path))
        assert len(collect(data.train_loader(1, 4))[0]) == 18
    finally:
        cv2.setNumThreads(before)
