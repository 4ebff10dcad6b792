"""Conv-2/4/6 and ResNet-20: the paper's architectures, sizes and prunable layers."""

import pytest
import torch

from lit_papers.lottery import layer_rates, prunable_weights
from lit_papers.models import build_model


# The paper's table lists 4.3M / 2.4M / 1.7M weights; its own layer list (3x3 same-padding convs,
# FC 256-256-10) gives 2.26M for Conv-6, which is what the architecture as described has.
@pytest.mark.parametrize("name, params, convs", [("conv2", 4.30e6, 2), ("conv4", 2.43e6, 4),
                                                 ("conv6", 2.26e6, 6)])
def test_convnets_match_paper_sizes(name, params, convs):
    torch.manual_seed(0)
    net = build_model(name, (3, 32, 32), 10)
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(params, rel=0.02)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    rates = layer_rates(net, 0.2, conv_rate=0.15)
    assert sorted(rates.values()).count(0.15) == convs
    assert list(rates.values())[-3:] == [0.2, 0.2, 0.1]  # fc 256, fc 256, output at half rate
    bias = [p for n, p in net.named_parameters() if n.endswith("bias")]
    assert all(bool((b == 0).all()) for b in bias)  # Glorot weights, zero biases


def test_resnet20_size_and_global_scope():
    net = build_model("resnet20", (3, 32, 32), 10)
    assert sum(p.numel() for p in net.parameters()) == pytest.approx(272e3, rel=0.02)
    assert net(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    weights = prunable_weights(net)
    assert len(weights) == 19 + 2 + 1  # 19 3x3 convs, 2 projection shortcuts, the fc layer
    rates = layer_rates(net, 0.0, conv_rate=0.2, output_rate=0.0)
    assert rates["fc.weight"] == 0.0 and all(r == 0.2 for n, r in rates.items() if n != "fc.weight")
    with pytest.raises(ValueError, match="6n\\+2"):
        build_model("resnet20", (3, 32, 32), 10, depth=21)
