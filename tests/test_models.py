"""Every model config builds and trains a step on the CPU; LeNet-5 (1998) has the published structure."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import compose_config
from hydra.utils import instantiate

from lenet.models import C3_CONNECTIONS, LeNet5Classic, ModernCNN, count_parameters, layer_output_shapes, scaled_tanh

MODEL_CONFIGS = {"lenet5": 44_426, "lenet5_classic": 60_850, "cnn": 104_938}


@pytest.mark.parametrize("name", MODEL_CONFIGS)
def test_model_config_builds_and_runs_forward_backward_on_cpu(name, tmp_path, synthetic_dir):
    cfg = compose_config(tmp_path, [f"model={name}"], synthetic_dir)
    classifier = instantiate(cfg.model, _recursive_=False)
    assert count_parameters(classifier.net) == MODEL_CONFIGS[name]
    torch.manual_seed(0)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    logits = classifier(x)
    assert logits.shape == (8, 10)
    F.cross_entropy(logits, y).backward()
    grads = [p.grad for p in classifier.net.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0


def test_classic_lenet5_layers_and_parameter_counts():
    net = LeNet5Classic()
    per_layer = {name: count_parameters(layer) for name, layer in net.named_children()}
    # LeCun et al. 1998, section II.B (output: 84x10 weights + 10 biases instead of the RBF units).
    assert per_layer == {"c1": 156, "s2": 12, "c3": 1516, "s4": 32, "c5": 48_120, "f6": 10_164, "output": 850}
    assert count_parameters(net) == 60_850
    shapes = dict(layer_output_shapes(net))
    assert shapes["c1"] == (1, 6, 28, 28)  # a 28x28 digit padded to 32x32 inside the net
    assert shapes["s2"] == (1, 6, 14, 14)
    assert shapes["c3"] == (1, 16, 10, 10)
    assert shapes["s4"] == (1, 16, 5, 5)
    assert shapes["c5"] == (1, 120, 1, 1)
    assert shapes["f6"] == (1, 84)


def test_classic_c3_connection_table_is_the_papers_table_1():
    mask = LeNet5Classic().c3.connection_mask()  # (16 C3 maps, 6 S2 maps)
    assert mask.shape == (16, 6)
    # Columns of Table I: six maps read 3 contiguous S2 maps, six read 4 contiguous, three read
    # 4 discontinuous, the last reads all six.
    assert [int(n) for n in mask.sum(dim=1)] == [3] * 6 + [4] * 9 + [6]
    assert mask[0].nonzero().flatten().tolist() == [0, 1, 2]
    assert mask[4].nonzero().flatten().tolist() == [0, 4, 5]
    assert mask[9].nonzero().flatten().tolist() == [0, 3, 4, 5]
    assert mask[14].nonzero().flatten().tolist() == [0, 2, 3, 5]
    assert mask.tolist() == [[i in inputs for i in range(6)] for inputs in C3_CONNECTIONS]


def test_classic_c3_output_map_ignores_unconnected_inputs():
    c3 = LeNet5Classic().c3
    x = torch.randn(2, 6, 14, 14)
    changed = x.clone()
    changed[:, 3] += 5.0  # S2 map 3 feeds C3 maps 1, 2, 3, 6, 7, 8, 9, 12, 14, 15 only
    difference = (c3(changed) - c3(x)).abs().amax(dim=(0, 2, 3))
    readers = {j for j, inputs in enumerate(C3_CONNECTIONS) if 3 in inputs}
    assert readers == {1, 2, 3, 6, 7, 8, 9, 12, 14, 15}
    for j in range(16):
        assert (difference[j] > 1e-3) == (j in readers), j


def test_scaled_tanh_maps_plus_minus_one_to_itself():
    values = scaled_tanh(torch.tensor([-1.0, 0.0, 1.0]))
    assert torch.allclose(values, torch.tensor([-1.0, 0.0, 1.0]), atol=1e-4)


def test_modern_cnn_has_batch_norm_and_dropout_that_act_only_in_training():
    net = ModernCNN()
    kinds = {type(m).__name__ for m in net.modules()}
    assert {"BatchNorm2d", "Dropout", "MaxPool2d"} <= kinds
    x = torch.randn(16, 1, 28, 28)
    net.eval()
    assert torch.equal(net(x), net(x))
    net.train()
    torch.manual_seed(0)
    assert not torch.equal(net(x), net(x))  # dropout draws anew


def test_modern_cnn_depth_and_width_are_knobs():
    deeper = ModernCNN(widths=(16, 32, 64), convs_per_stage=2)
    convs = [m for m in deeper.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [16, 16, 32, 32, 64, 64]
    assert deeper(torch.randn(2, 1, 28, 28)).shape == (2, 10)
