"""lenet.explain and its figures in lenet.plots: every visualisation's shapes and value ranges, on several network layouts, and the
lenet-explain command on a checkpoint trained in the test session."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from torch import nn

import lenet.models
from lenet.datasets import normalize
from lenet.explain import (
    FIGURE_NAMES,
    embed_2d,
    feature_maps,
    first_layer_filters,
    main,
    most_confused_pairs,
    penultimate_features,
    saliency,
)
from lenet.plots import confused_pairs_figure, embedding_figure, feature_maps_figure, filters_figure, saliency_figure
from lenet.inference import load_model, read_checkpoint
from lenet.models import LeNet5, layer_output_shapes

NETWORKS = ["LeNet5", "LeNet5Classic", "ModernCNN"]  # every layout in lenet.models the explainer must handle


def network(name: str) -> nn.Module:
    torch.manual_seed(0)
    return getattr(lenet.models, name)().eval()


def digits(count: int = 1, seed: int = 0) -> torch.Tensor:
    """Random network inputs (count, 1, 28, 28), normalised like MNIST."""
    return normalize(torch.rand(count, 1, 28, 28, generator=torch.Generator().manual_seed(seed)))


class SharedPoolNet(nn.Module):
    """A layout unlike LeNet5's: one pooling module used twice, convolutions as plain attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, padding=1)  # (B, 4, 28, 28): same size as its input
        self.conv2 = nn.Conv2d(4, 8, 3, padding=1)  # (B, 8, 14, 14)
        self.pool = nn.MaxPool2d(2)
        self.head = nn.Linear(8 * 7 * 7, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        return self.head(x.flatten(1))


def image_axes(fig) -> list:
    return [ax for ax in fig.axes if ax.images]


def close(fig) -> None:
    import matplotlib.pyplot as plt

    plt.close(fig)


# ----------------------------------------------------------------------------- compute functions


def test_feature_maps_of_lenet5_are_its_conv_and_pool_outputs():
    net = network("LeNet5")
    maps = feature_maps(net, digits(2))
    assert {name: tuple(m.shape) for name, m in maps.items()} == {
        "features.0": (2, 6, 24, 24),
        "features.2": (2, 6, 12, 12),
        "features.3": (2, 16, 8, 8),
        "features.5": (2, 16, 4, 4),
    }
    # Pooled ReLU outputs are non-negative; the raw convolution outputs are not.
    assert maps["features.2"].min() >= 0 and maps["features.5"].min() >= 0
    assert maps["features.0"].min() < 0
    assert all(torch.isfinite(m).all() for m in maps.values())


@pytest.mark.parametrize("name", NETWORKS)
def test_feature_maps_follow_any_network_layout(name):
    net = network(name)
    maps = feature_maps(net, digits())
    leaf_shapes = dict(layer_output_shapes(net))
    assert len(maps) >= 4, f"{name}: expected at least two conv and two pool layers, got {list(maps)}"
    for layer, output in maps.items():
        assert output.dim() == 4 and tuple(output.shape) == leaf_shapes[layer]
    # No activation, normalisation or dropout layer sneaks in (they keep their input's shape).
    kinds = {type(dict(net.named_modules())[layer]).__name__ for layer in maps}
    assert not kinds & {"ReLU", "Tanh", "BatchNorm2d", "Dropout", "Dropout2d"}


def test_a_reused_pooling_layer_appears_once_per_call():
    maps = feature_maps(SharedPoolNet().eval(), digits())
    assert list(maps) == ["conv1", "pool", "conv2", "pool (call 2)"]
    assert maps["pool"].shape == (1, 4, 14, 14) and maps["pool (call 2)"].shape == (1, 8, 7, 7)


def test_first_layer_filters_are_the_first_convolution_weights():
    net = network("LeNet5")
    filters = first_layer_filters(net)
    assert filters.shape == (6, 1, 5, 5)
    assert torch.equal(filters, net.features[0].weight.detach())
    filters.zero_()  # a copy: drawing code may not change the network
    assert net.features[0].weight.abs().sum() > 0


@pytest.mark.parametrize("name", NETWORKS + ["SharedPoolNet"])
def test_saliency_maps_are_unit_range_images_for_the_predicted_class(name):
    net = SharedPoolNet().eval() if name == "SharedPoolNet" else network(name)
    x = digits()
    result = saliency(net, x)
    with torch.no_grad():
        probs = net(x).softmax(dim=1)[0]
    assert result.target == int(probs.argmax())
    assert result.probability == pytest.approx(float(probs.max()), abs=1e-6)
    for picture in (result.gradients, result.grad_cam):
        assert picture.shape == (28, 28)
        assert picture.min() >= 0 and picture.max() == pytest.approx(1.0)
    assert all(p.grad is None for p in net.parameters()), "saliency must not leave gradients in the network"


def test_grad_cam_uses_the_last_spatial_convolution():
    assert saliency(network("LeNet5"), digits()).layer == "features.3"  # (16, 8, 8), not the pooled 4x4
    assert saliency(SharedPoolNet().eval(), digits()).layer == "conv2"


def test_saliency_for_a_chosen_class_and_of_a_constant_input():
    net = network("LeNet5")
    chosen = saliency(net, digits(), target=3)
    assert chosen.target == 3
    with torch.no_grad():
        assert chosen.probability == pytest.approx(float(net(digits()).softmax(dim=1)[0, 3]), abs=1e-6)
    for value in (0.0, 0.5, 1.0):
        flat = saliency(net, normalize(torch.full((1, 1, 28, 28), value)))
        for picture in (flat.gradients, flat.grad_cam):
            assert torch.isfinite(picture).all() and picture.min() >= 0 and picture.max() <= 1


def test_saliency_explains_one_image_at_a_time():
    with pytest.raises(ValueError, match=r"one image.*\(2, 1, 28, 28\)"):
        saliency(network("LeNet5"), digits(2))


def test_penultimate_features_are_the_last_linear_layers_input():
    net = network("LeNet5")
    x = digits(7)
    features = penultimate_features(net, x, batch_size=3)  # batches of 3, 3 and 1
    with torch.no_grad():
        expected = net.classifier[:-1](net.features(x))  # everything before the output layer
    assert features.shape == (7, 84)
    torch.testing.assert_close(features, expected)


def test_penultimate_features_of_other_layouts():
    assert penultimate_features(network("ModernCNN"), digits(3)).shape == (3, 128 * 3 * 3)
    with pytest.raises(ValueError, match="no nn.Linear"):
        penultimate_features(nn.Sequential(nn.Conv2d(1, 2, 3)), digits())


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embedding_has_one_finite_2d_point_per_sample(method):
    features = torch.randn(40, 84, generator=torch.Generator().manual_seed(1))
    points = embed_2d(features, method)
    assert points.shape == (40, 2) and np.isfinite(points).all()
    assert np.array_equal(points, embed_2d(features, method)), "same seed, same picture"


def test_pca_embedding_keeps_the_main_direction_first():
    direction = torch.zeros(84)
    direction[5] = 1.0
    features = torch.randn(50, 84) * 0.01 + torch.linspace(-3, 3, 50)[:, None] * direction
    points = embed_2d(features, "pca")
    assert points[:, 0].var() > 100 * points[:, 1].var()


def test_embedding_rejects_unknown_methods_and_tiny_sets():
    with pytest.raises(ValueError, match="umap.*tsne"):
        embed_2d(torch.randn(10, 4), "umap")
    with pytest.raises(ValueError, match="at least 3"):
        embed_2d(torch.randn(2, 4), "pca")


def test_most_confused_pairs_counts_errors_by_true_and_predicted_class():
    targets = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
    predicted = torch.tensor([1, 1, 0, 0, 1, 2, 2, 1])
    probs = torch.nn.functional.one_hot(predicted, 3).float()
    assert most_confused_pairs(probs, targets) == [(0, 1, 2), (1, 0, 1), (2, 1, 1)]
    assert most_confused_pairs(probs, targets, top=1) == [(0, 1, 2)]
    assert most_confused_pairs(torch.nn.functional.one_hot(targets, 3).float(), targets) == []


# ----------------------------------------------------------------------------- figures


def test_filters_figure_shows_every_filter_on_one_symmetric_scale():
    filters = first_layer_filters(network("LeNet5"))
    fig = filters_figure(filters)
    shown = image_axes(fig)
    assert len(shown) == 6
    limits = {ax.images[0].get_clim() for ax in shown}
    assert len(limits) == 1
    low, high = limits.pop()
    assert low == -high == pytest.approx(-float(filters.abs().max()))
    close(fig)


def test_feature_maps_figure_has_a_row_per_layer_and_a_picture_per_channel():
    net = network("ModernCNN")
    maps = feature_maps(net, digits())
    fig = feature_maps_figure(torch.rand(1, 28, 28), maps, max_channels=16)
    # The input, then min(channels, 16) pictures for each of the six conv/pool layers.
    assert len(image_axes(fig)) == 1 + 16 * len(maps)
    assert "16 of 128 ch" in " ".join(ax.get_ylabel() for ax in fig.axes)
    close(fig)


def test_saliency_figure_shows_input_gradients_and_overlay():
    result = saliency(network("LeNet5"), digits())
    fig = saliency_figure(torch.rand(1, 28, 28), result, "test digit")
    assert [len(ax.images) for ax in fig.axes] == [1, 1, 2]  # the overlay is the image plus Grad-CAM
    assert fig.axes[1].images[0].get_array().shape == (28, 28)
    assert f"class {result.target}" in fig._suptitle.get_text()
    close(fig)


def test_embedding_figure_has_one_point_per_sample_coloured_by_class():
    labels = torch.arange(30) % 10
    points = np.random.default_rng(0).normal(size=(30, 2))
    fig = embedding_figure(points, labels)
    scatters = fig.axes[0].collections
    assert sum(len(s.get_offsets()) for s in scatters) == 30
    assert len(scatters) == 10
    assert len({tuple(s.get_facecolor()[0]) for s in scatters}) == 10, "one colour per class"
    close(fig)


def test_confused_pairs_figure_shows_the_examples_of_each_pair():
    targets = torch.tensor([4, 4, 4, 7, 7, 1])
    predicted = torch.tensor([9, 9, 9, 1, 7, 1])
    probs = torch.nn.functional.one_hot(predicted, 10).float() * 0.9 + 0.01
    images = torch.randint(0, 256, (6, 1, 28, 28), dtype=torch.uint8)
    pairs = most_confused_pairs(probs, targets)
    assert pairs == [(4, 9, 3), (7, 1, 1)]
    fig = confused_pairs_figure(images, targets, probs, pairs, examples=2)
    assert [sum(1 for ax in fig.axes[row * 2 : row * 2 + 2] if ax.images) for row in range(2)] == [2, 1]
    assert fig.axes[0].get_ylabel() == "4→9\n3 images"
    close(fig)


# ----------------------------------------------------------------------------- on a trained checkpoint


@pytest.fixture(scope="module")
def trained(synthetic_run):
    return load_model(synthetic_run)


def test_trained_network_explains_a_test_digit_it_gets_right(trained, synthetic_test):
    images, labels = synthetic_test
    x = normalize(images[:1], trained.mean, trained.std)
    result = saliency(trained.net, x)
    assert result.target == int(labels[0]) and result.probability > 0.9
    # Input gradients concentrate on and around the strokes, not on the empty border.
    ink = torch.nn.functional.max_pool2d((images[0].float() > 0)[None].float(), 5, 1, 2)[0, 0] > 0
    assert result.gradients[ink].mean() > 2 * result.gradients[~ink].mean()


def test_trained_embedding_separates_the_classes(trained, synthetic_test):
    images, labels = synthetic_test
    features = penultimate_features(trained.net, normalize(images[:300], trained.mean, trained.std))
    points = embed_2d(features, "tsne")
    # Leave-one-out nearest neighbour in the 2-D picture: the clusters a reader sees are the classes.
    distances = np.linalg.norm(points[:, None] - points[None], axis=2)
    np.fill_diagonal(distances, np.inf)
    agreement = (labels[:300].numpy()[distances.argmin(axis=1)] == labels[:300].numpy()).mean()
    assert agreement > 0.85


def read_png(path):
    from PIL import Image

    with Image.open(path) as image:
        return np.asarray(image.convert("L"))


def test_explain_command_writes_every_figure_and_logs_them_to_the_run(synthetic_run, synthetic_test, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(synthetic_run, run_dir)  # the session's run stays as other tests expect it
    assert main([str(run_dir), "--index", "3", "--samples", "200", "--method", "pca"]) == 0

    out_dir = run_dir / "explain"  # the default for a run directory
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(f"{name}.png" for name in FIGURE_NAMES)
    for name in FIGURE_NAMES:
        pixels = read_png(out_dir / f"{name}.png")
        assert min(pixels.shape) > 150 and pixels.std() > 10, f"{name}.png looks empty"
    printed = capsys.readouterr().out
    label = int(synthetic_test[1][3])
    assert f"test image #3 (label {label}): predicted {label}" in printed and "most confused" in printed

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    assert {f"explain/{name}" for name in FIGURE_NAMES} <= set(events.Tags()["images"])
    # Logged at the checkpoint's training step, beside the run's own report figures.
    assert {event.step for event in events.Images("explain/saliency")} == {read_checkpoint(run_dir)["global_step"]}
    assert (run_dir / "tensorboard" / "projector_config.pbtxt").is_file()


def test_explain_command_with_a_checkpoint_file_and_explicit_folders(synthetic_run, tmp_path):
    checkpoint = synthetic_run / "checkpoints" / "best.ckpt"
    out_dir, board = tmp_path / "pictures", tmp_path / "board"
    assert main([str(checkpoint), "--out", str(out_dir), "--samples", "100", "--method", "pca", "--tensorboard", str(board)]) == 0
    assert len(list(out_dir.glob("*.png"))) == len(FIGURE_NAMES)
    assert list(board.glob("events.out.tfevents.*"))


def test_explain_command_reports_bad_input(synthetic_run, tmp_path, capsys):
    assert main([str(synthetic_run), "--out", str(tmp_path), "--index", "10000", "--no-tensorboard"]) == 2
    assert "--index 10000 is outside the test set: choose 0..9999" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.ckpt"), "--out", str(tmp_path)]) == 2
    assert "does not exist" in capsys.readouterr().err


def draw_digit_seven(path, size=(300, 240)):
    """A user-style picture: dark pen strokes on white paper, off-centre, much larger than 28x28."""
    from PIL import Image, ImageDraw

    canvas = Image.new("L", size, 255)
    pen = ImageDraw.Draw(canvas)
    pen.line([(60, 40), (170, 40)], fill=0, width=14)
    pen.line([(170, 40), (100, 200)], fill=0, width=14)
    canvas.save(path)
    return path


def test_explain_command_on_a_user_image(synthetic_run, tmp_path, capsys):
    image = draw_digit_seven(tmp_path / "seven.png")
    out_dir = tmp_path / "out"
    assert main([str(synthetic_run), str(image), "--out", str(out_dir), "--samples", "100", "--method", "pca", "--no-tensorboard"]) == 0
    assert "your image seven.png: predicted 7" in capsys.readouterr().out
    assert (out_dir / "saliency.png").is_file() and (out_dir / "feature_maps.png").is_file()

    blank = tmp_path / "blank.png"
    from PIL import Image

    Image.new("L", (100, 100), 255).save(blank)
    assert main([str(synthetic_run), str(blank), "--out", str(out_dir), "--no-tensorboard"]) == 2
    assert "no digit found" in capsys.readouterr().err
