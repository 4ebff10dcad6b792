"""The paper's CIFAR-10 models: parameter counts equal Zhang et al.'s exactly (28x28x3 inputs)."""

import pytest
import torch

from lit_papers.models import build_model

PAPER_COUNTS = [
    ("mlp", {"hidden": [512]}, 1_209_866),
    ("mlp", {"hidden": [512, 512, 512]}, 1_735_178),
    ("alexnet_small", {}, 1_387_786),
    ("inception_small", {}, 1_649_402),
    ("inception_small", {"batch_norm": False}, 1_649_402),
]


@pytest.mark.parametrize("arch,kwargs,count", PAPER_COUNTS)
def test_parameter_counts_match_the_paper(arch, kwargs, count):
    net = build_model(arch, (3, 28, 28), 10, **kwargs)
    assert sum(p.numel() for p in net.parameters()) == count
    assert net(torch.zeros(2, 3, 28, 28)).shape == (2, 10)


def test_inception_batch_norm_switch_really_removes_batch_norm():
    with_bn = build_model("inception_small", (3, 28, 28), 10)
    without = build_model("inception_small", (3, 28, 28), 10, batch_norm=False)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in with_bn.modules())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in without.modules())


@pytest.mark.parametrize("arch", ["alexnet_small", "inception_small"])
def test_grayscale_inputs_and_dropout_switch(arch):
    net = build_model(arch, (1, 28, 28), 10, dropout=0.5)
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.5 for m in net.modules())
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    with pytest.raises(ValueError, match="C, H, W"):
        build_model(arch, (784,), 10)
