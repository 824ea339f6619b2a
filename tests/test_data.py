"""The in-memory MNIST pipeline: right data, right split, right batches, clear errors."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys

import pytest
import torch

from lenet.data import BatchIndices, MNISTDataModule
from lenet.datafiles import DataError, load_split
from lenet.datasets import normalize

TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_official_files_load_with_known_statistics(mnist_dir):
    images, labels = load_split(mnist_dir, "mnist", "train")
    assert images.shape == (60_000, 1, 28, 28) and images.dtype == torch.uint8
    assert torch.bincount(labels).tolist() == TRAIN_COUNTS
    assert images.float().mean().item() == pytest.approx(33.318, abs=1e-3)
    _, test_labels = load_split(mnist_dir, "mnist", "test")
    assert torch.bincount(test_labels).tolist() == TEST_COUNTS


def test_split_is_seeded_disjoint_and_keeps_the_official_test_set(synthetic_dir):
    dm = MNISTDataModule(data_dir=str(synthetic_dir), download=False)
    dm.setup()
    train, val, test = dm.splits["train"], dm.splits["val"], dm.splits["test"]
    assert len(train[1]) == 54_000 and len(val[1]) == 6_000 and len(test[1]) == 10_000
    again = MNISTDataModule(data_dir=str(synthetic_dir), download=False, shuffle_seed=7)
    again.setup()
    assert torch.equal(again.splits["val"][0], val[0])  # the training seed never moves the split
    other = MNISTDataModule(data_dir=str(synthetic_dir), download=False, split_seed=1)
    other.setup()
    assert not torch.equal(other.splits["val"][1], val[1])
    # Train and validation images are disjoint pieces of the official training set.
    _, official = load_split(synthetic_dir, "mnist", "train")
    assert torch.bincount(torch.cat([train[1], val[1]])).tolist() == torch.bincount(official).tolist()


def test_normalize_matches_torchvision_transforms(synthetic_test):
    from torchvision.transforms import functional as TF

    batch = synthetic_test[0][:16]
    reference = torch.stack([TF.normalize(TF.to_tensor(img.squeeze(0).numpy()), [0.1307], [0.3081]) for img in batch])
    torch.testing.assert_close(normalize(batch), reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(normalize(batch.float() / 255), reference, atol=1e-5, rtol=1e-5)
    assert normalize(batch).is_contiguous(memory_format=torch.channels_last)


def test_each_epoch_sees_every_training_sample_once_in_a_seeded_order():
    sampler = BatchIndices(1000, 64, shuffle=True, seed=3)
    epoch0 = torch.cat(list(sampler))
    # Every sample exactly once per epoch: a permutation of all indices.
    assert sorted(epoch0.tolist()) == list(range(1000))
    assert len(sampler) == len(list(sampler)) == 16
    assert torch.equal(torch.cat(list(BatchIndices(1000, 64, shuffle=True, seed=3))), epoch0)
    sampler.set_epoch(1)
    epoch1 = torch.cat(list(sampler))
    assert sorted(epoch1.tolist()) == list(range(1000)) and not torch.equal(epoch0, epoch1)
    assert torch.equal(torch.cat(list(BatchIndices(1000, 64, shuffle=False))), torch.arange(1000))


@pytest.mark.parametrize("shuffle", [True, False])
def test_ddp_shards_do_not_overlap(shuffle):
    shards = [torch.cat(list(BatchIndices(1001, 50, shuffle, seed=5, rank=r, world_size=2))) for r in range(2)]
    assert not set(shards[0].tolist()) & set(shards[1].tolist())
    if shuffle:  # training: equal shards, so both processes run the same number of steps
        assert len(shards[0]) == len(shards[1]) == 500
    else:  # evaluation: every sample exactly once
        assert sorted(torch.cat(shards).tolist()) == list(range(1001))


def test_batches_are_normalised_on_transfer_with_labels_kept(synthetic_dir):
    dm = MNISTDataModule(data_dir=str(synthetic_dir), download=False, batch_size=32)
    images, labels = next(iter(dm.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape == (32, 1, 28, 28)
    x, y = dm.on_after_batch_transfer((images, labels), 0)
    assert torch.equal(y, labels)
    torch.testing.assert_close(x, normalize(images))


@pytest.fixture
def data_copy(tmp_path, synthetic_dir):
    raw = tmp_path / "MNIST" / "raw"
    shutil.copytree(synthetic_dir / "MNIST" / "raw", raw)
    return tmp_path, raw


def test_truncated_file_names_the_file_and_the_fix(data_copy):
    root, raw = data_copy
    path = raw / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte is truncated.*Delete it"):
        load_split(root, "mnist", "test")


def test_wrong_header_and_bad_labels_are_reported(data_copy, synthetic_dir):
    root, raw = data_copy
    images = raw / "t10k-images-idx3-ubyte"
    images.write_bytes(b"\x00\x00\x08\x01" + images.read_bytes()[4:])
    with pytest.raises(DataError, match="not the expected IDX file"):
        load_split(root, "mnist", "test")
    shutil.copy(synthetic_dir / "MNIST" / "raw" / "t10k-images-idx3-ubyte", images)
    labels = raw / "t10k-labels-idx1-ubyte"
    data = bytearray(labels.read_bytes())
    data[8] = 42
    labels.write_bytes(bytes(data))
    with pytest.raises(DataError, match="label 42"):
        load_split(root, "mnist", "test")


def test_gzip_only_folder_loads_the_same_tensors(data_copy, synthetic_test):
    root, raw = data_copy
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (raw / f"{name}.gz").write_bytes(gzip.compress((raw / name).read_bytes(), compresslevel=1))
        (raw / name).unlink()
    images, labels = load_split(root, "mnist", "test")
    expected_images, expected_labels = synthetic_test
    assert torch.equal(images, expected_images) and torch.equal(labels, expected_labels)


@pytest.mark.slow  # a process of its own
def test_reading_the_test_split_does_not_import_lightning(synthetic_dir):
    code = "import sys, lenet.evaluation as e; e.test_split('mnist'); print('lightning' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "LENET_DATA_DIR": str(synthetic_dir)})
    assert result.stdout.strip() == "False", result.stderr[-2000:]


def test_corrupt_gzip_is_reported(data_copy):
    root, raw = data_copy
    (raw / "t10k-labels-idx1-ubyte").unlink()
    (raw / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"x")[:10])
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz is not a readable gzip file"):
        load_split(root, "mnist", "test")


def test_missing_files_without_download_say_what_to_do(tmp_path):
    dm = MNISTDataModule(data_dir=str(tmp_path), download=False)
    with pytest.raises(DataError, match="data.download=false.*LENET_DATA_DIR"):
        dm.setup()


@pytest.mark.parametrize(
    "kwargs, message",
    [({"dataset": "cifar"}, "data.dataset='cifar' is unknown"), ({"val_size": 0}, "data.val_size=0"), ({"batch_size": 0}, "data.batch_size=0")],
)
def test_wrong_config_values_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MNISTDataModule(**kwargs)
