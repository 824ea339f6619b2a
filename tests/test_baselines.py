"""scikit-learn baselines: the data module's split, the project's metrics, and (on real MNIST) sane
accuracy on a subset."""

from __future__ import annotations

import numpy as np
import pytest

from lenet.baselines import BASELINES, fit_and_evaluate, load_data
from lenet.data import MNISTDataModule

# Accuracy floors when trained on 2,000 images (each sits a few points below what it reaches).
FLOORS = {"linear_svm": 0.80, "svm_rbf": 0.90, "random_forest": 0.86, "knn": 0.86}


@pytest.fixture(scope="module")
def small_data(mnist_dir):
    return load_data(str(mnist_dir), train_size=2000)


@pytest.fixture(scope="module")
def small_synthetic(synthetic_dir):
    return load_data(str(synthetic_dir), train_size=2000)


def test_data_is_the_data_modules_split(small_synthetic, synthetic_dir):
    datamodule = MNISTDataModule(data_dir=str(synthetic_dir), download=False)
    datamodule.setup()
    train_images, train_labels = datamodule.splits["train"]
    assert small_synthetic.train_x.shape == (2000, 784) and small_synthetic.test_x.shape == (10_000, 784)
    assert small_synthetic.train_x.dtype == np.float32
    assert 0.0 <= small_synthetic.train_x.min() and small_synthetic.train_x.max() <= 1.0
    np.testing.assert_array_equal(small_synthetic.train_y, train_labels[:2000].numpy())
    np.testing.assert_allclose(small_synthetic.train_x[5], train_images[5].flatten().numpy() / 255, atol=1e-7)
    np.testing.assert_array_equal(small_synthetic.test_y, datamodule.splits["test"][1].numpy())


def test_full_data_uses_the_54000_image_train_split(synthetic_dir):
    data = load_data(str(synthetic_dir))
    assert len(data.train_y) == 54_000 and len(data.test_y) == 10_000


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_scores_with_the_project_metrics(name, small_data):
    result = fit_and_evaluate(name, small_data)
    assert result["test/acc"] > FLOORS[name]
    assert result["test/acc"] < 0.99  # 2,000 images cannot do better: the test really is held out
    for key in ("test/precision", "test/recall", "test/f1", "test/class_9/f1"):
        assert 0.5 < result[key] <= 1.0
    assert result["fit_seconds"] > 0 and result["inference_images_per_second"] > 0
    assert result["parameters"] > 0 and result["train_size"] == 2000


def test_linear_svm_stores_one_weight_per_pixel_and_class(small_synthetic):
    assert fit_and_evaluate("linear_svm", small_synthetic)["parameters"] == 784 * 10 + 10


def test_unknown_baseline_names_the_choices(small_synthetic, synthetic_dir):
    with pytest.raises(ValueError, match="random_forest"):
        fit_and_evaluate("xgboost", small_synthetic)
    with pytest.raises(ValueError, match="between 1 and 54000"):
        load_data(str(synthetic_dir), train_size=60_000)
