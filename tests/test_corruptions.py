"""Randomization tests (Zhang et al. 2017, Sec. 2.1): the exact corruptions and their invariants."""

import pytest
import torch

from lit_papers.data.corruptions import CORRUPTIONS, apply_corruption

K = 10


def _data(n_train=20000, n_test=500, shape=(3, 8, 8), seed=0):
    g = torch.Generator().manual_seed(seed)
    train_x = torch.randn(n_train, *shape, generator=g) * torch.tensor([1.0, 2.0, 0.5])[:, None, None] + 3.0
    test_x = torch.randn(n_test, *shape, generator=g)
    train_y = torch.randint(0, K, (n_train,), generator=g)
    test_y = torch.randint(0, K, (n_test,), generator=g)
    return train_x, train_y, test_x, test_y


def _apply(kind, data, **kw):
    kw = {"prob": 1.0, "seed": 0, "num_classes": K, "corrupt_test": False} | kw
    return apply_corruption(kind, *data, **kw)


def test_registry_lists_the_six_kinds():
    assert set(CORRUPTIONS.names()) == {"none", "partial_labels", "random_labels", "shuffled_pixels",
                                        "random_pixels", "gaussian_pixels"}
    with pytest.raises(ValueError, match="random_labels"):
        _apply("random_label", _data(100))


@pytest.mark.parametrize("prob", [0.0, 0.2, 0.5, 0.8, 1.0])
def test_partial_labels_change_p_times_one_minus_one_over_k(prob):
    data = _data()
    _, y, _, _ = _apply("partial_labels", data, prob=prob)
    changed = (y != data[1]).float().mean().item()
    # redraws are uniform over all K classes, so a corrupted label keeps its class w.p. 1/K
    assert changed == pytest.approx(prob * (1 - 1 / K), abs=0.01)
    if prob == 0.0:
        assert torch.equal(y, data[1])


def test_random_labels_change_ninety_percent_and_are_uniform():
    data = _data()
    _, y, _, _ = _apply("random_labels", data, prob=0.3)  # prob is ignored: random = p of 1
    assert (y != data[1]).float().mean().item() == pytest.approx(0.9, abs=0.01)
    counts = torch.bincount(y, minlength=K).float() / len(y)
    assert torch.allclose(counts, torch.full((K,), 0.1), atol=0.01)


def test_test_split_clean_unless_asked():
    data = _data()
    for kind in CORRUPTIONS.names():
        _, _, tx, ty = _apply(kind, data)
        assert torch.equal(tx, data[2]) and torch.equal(ty, data[3]), kind
    _, _, _, ty = _apply("random_labels", data, corrupt_test=True)
    assert (ty != data[3]).float().mean().item() > 0.8


@pytest.mark.parametrize("kind", ["partial_labels", "random_labels", "shuffled_pixels", "random_pixels",
                                  "gaussian_pixels"])
def test_same_seed_reproduces_other_seed_differs(kind):
    data = _data(2000)
    a = _apply(kind, data, prob=0.5, seed=7, corrupt_test=True)
    b = _apply(kind, data, prob=0.5, seed=7, corrupt_test=True)
    c = _apply(kind, data, prob=0.5, seed=8, corrupt_test=True)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.equal(u, v) for u, v in zip(a, c))


def test_global_rng_is_neither_used_nor_needed():
    data = _data(2000)
    torch.manual_seed(1)
    a = _apply("random_labels", data)
    torch.manual_seed(2)
    state = torch.get_rng_state()
    b = _apply("random_labels", data)
    assert torch.equal(a[1], b[1])
    assert torch.equal(state, torch.get_rng_state())


def _recover_perm(original, shuffled):
    """The source position of every output pixel, using distinct pixel values of channel 0."""
    n, c, h, w = original.shape
    src, dst = original.reshape(n, c, h * w)[:, 0], shuffled.reshape(n, c, h * w)[:, 0]
    return (dst[:, :, None] == src[:, None, :]).float().argmax(dim=2)  # (N, H*W)


def test_shuffled_pixels_one_permutation_for_all_train_and_test_images():
    data = _data(300, 50)
    x, y, tx, ty = _apply("shuffled_pixels", data, corrupt_test=True)
    assert torch.equal(y, data[1]) and torch.equal(ty, data[3])
    perms = torch.cat([_recover_perm(data[0], x), _recover_perm(data[2], tx)])  # (350, 64)
    assert (perms == perms[:1]).all()
    assert not torch.equal(perms[0], torch.arange(64))
    # all channels of a pixel move together
    flat_in, flat_out = data[0].reshape(300, 3, 64), x.reshape(300, 3, 64)
    assert torch.equal(flat_out, flat_in[:, :, perms[0]])


def test_random_pixels_new_permutation_per_image_keeping_its_values():
    data = _data(300)
    x, y, _, _ = _apply("random_pixels", data)
    assert torch.equal(y, data[1])
    flat_in, flat_out = data[0].reshape(300, 3, 64), x.reshape(300, 3, 64)
    # each image keeps its own multiset of values, channel by channel
    assert torch.equal(flat_in.sort(dim=2).values, flat_out.sort(dim=2).values)
    perms = _recover_perm(data[0], x)
    assert torch.equal(flat_out, flat_in.gather(2, perms[:, None, :].expand(-1, 3, -1)))
    assert len({tuple(p.tolist()) for p in perms}) == 300


def test_gaussian_pixels_match_the_dataset_statistics():
    data = _data(5000)
    # (seed 3: seed 0 would redraw exactly the noise that made the synthetic images)
    x, y, tx, _ = _apply("gaussian_pixels", data, seed=3, corrupt_test=True)
    assert torch.equal(y, data[1])
    for ref, out in ((data[0], x), (data[0], tx)):
        assert torch.allclose(out.mean(dim=(0, 2, 3)), ref.mean(dim=(0, 2, 3)), rtol=0.03)
        assert torch.allclose(out.std(dim=(0, 2, 3)), ref.std(dim=(0, 2, 3)), rtol=0.03)
    # new draws, not the images: nothing correlates with the original pixels
    assert abs(torch.corrcoef(torch.stack([x[:, 0].flatten(), data[0][:, 0].flatten()]))[0, 1]) < 0.02


def test_bad_inputs_name_the_fix():
    data = _data(100)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        _apply("partial_labels", data, prob=1.5)
    with pytest.raises(TypeError, match="int64"):
        _apply("random_labels", (data[0], data[1].int(), data[2], data[3]))
