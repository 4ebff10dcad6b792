"""The curve settings group (mode_connectivity/settings.Curve, `model.curve`): old flat keys still work on
the command line, old config files are refused and upgraded, bad values name the field, and a module
built from the group has the network the flat arguments gave."""

from __future__ import annotations

import pytest
from conftest import REPO, printed_model_args, refused_then_upgraded

from lit_papers.cli import main
from lit_papers.mode_connectivity import CurveModule
from lit_papers.mode_connectivity.curves import CURVES
from lit_papers.mode_connectivity.settings import Curve

CONFIG = "configs/mode_connectivity.yaml"
MODULE = dict(arch="mlp", arch_kwargs={"hidden": [8]}, num_classes=3, input_shape=(1, 4, 4))

OLD = """\
model:
  class_path: lit_papers.mode_connectivity.CurveModule
  init_args:
    arch: mlp
    # the curve
    curve: polychain   # broken line
    num_bends: 2
    endpoint_epochs: 3
    endpoint_seeds: [4, 5]
    endpoint_lr: 0.2
    eval_points: 5
"""


def _curve(args, capsys) -> tuple[dict, str]:
    init, err = printed_model_args(["--config", CONFIG, *args], capsys)
    return init["curve"], err


def test_an_old_flag_lands_in_the_group(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    curve, err = _curve(["--model.num_bends=3"], capsys)
    assert curve["num_bends"] == 3 and curve["kind"] == "bezier" and curve["endpoint_epochs"] == 10
    assert "--model.curve.num_bends" in err


def test_an_old_curve_name_becomes_its_kind(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    curve, err = _curve(["--model.curve=polychain", "--model.init_args.endpoint_seeds=[3, 4]"], capsys)
    assert curve["kind"] == "polychain" and curve["num_bends"] == 1 and curve["endpoint_seeds"] == [3, 4]
    assert "--model.curve.kind" in err and "--model.init_args.curve.endpoint_seeds" in err


def test_the_new_flags_and_a_whole_group(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    curve, err = _curve(["--model.curve.kind=segment", "--model.curve.num_bends=0"], capsys)
    assert curve["kind"] == "segment" and curve["num_bends"] == 0 and "note:" not in err
    curve, _ = _curve(['--model.curve={"kind": "polychain", "num_bends": 2}'], capsys)
    assert curve["kind"] == "polychain" and curve["num_bends"] == 2


def test_an_old_config_file_is_refused_then_upgraded(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    path = tmp_path / "old.yaml"
    err, text = refused_then_upgraded(["--config", CONFIG], path, OLD, capsys)
    for old, new in (("curve", "kind"), ("num_bends", "num_bends"), ("endpoint_epochs", "endpoint_epochs"),
                     ("endpoint_seeds", "endpoint_seeds"), ("endpoint_lr", "endpoint_lr")):
        assert f"model.init_args.{old} -> model.init_args.curve.{new}" in err
    assert "# the curve" in text and "kind: polychain   # broken line" in text
    curve, _ = _curve(["--config", str(path)], capsys)
    assert Curve.of(curve) == Curve(kind="polychain", num_bends=2, endpoint_epochs=3, endpoint_seeds=(4, 5),
                                    endpoint_lr=0.2)


@pytest.mark.parametrize(("settings", "message"), [
    ({"kind": "spline"}, "valid curve names: bezier, polychain, segment"),
    ({"num_bends": -1}, "curve.num_bends must be >= 0"),
    ({"kind": "segment"}, "curve.num_bends=0"),
    ({"endpoints": ["a.ckpt"]}, "curve.endpoints must list exactly two"),
    ({"endpoint_epochs": -1}, "curve.endpoint_epochs must be >= 0"),
    ({"endpoint_seeds": [1, 1]}, "curve.endpoint_seeds must be two different seeds"),
    ({"endpoint_seeds": [1, 2, 3]}, "curve.endpoint_seeds must be two different seeds"),
    ({"endpoint_lr": 0.0}, "curve.endpoint_lr must be positive"),
    ({"bends": 2}, "has no setting bends"),
])
def test_a_bad_value_names_the_field(settings, message):
    with pytest.raises(ValueError, match=message):
        Curve.of(settings)


def test_a_bad_value_on_the_command_line_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", CONFIG, "--model.curve.endpoint_seeds=[2, 2]", f"--run_root={tmp_path}",
              "--trainer.enable_progress_bar=false", "--trainer.logger=false"])
    assert exit_.value.code == 2 and "curve.endpoint_seeds must be two different seeds" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(("kind", "num_bends"), [("bezier", 1), ("bezier", 3), ("polychain", 2), ("segment", 0)])
def test_the_group_builds_the_same_network(kind, num_bends):
    module = CurveModule(**MODULE, curve=Curve(kind=kind, num_bends=num_bends))
    assert module.net.num_points == num_bends + 2 and module.net.curve == kind
    assert module.net.coefficient_fn is CURVES.get(kind)
    assert module.hparams.curve == Curve(kind=kind, num_bends=num_bends).as_dict()  # a plain dict
    assert module.curve == Curve(kind=kind, num_bends=num_bends)
    again = CurveModule(**module.hparams)  # what load_from_checkpoint does
    assert again.curve == module.curve and again.net.num_points == module.net.num_points
    for k, seed in ((0, 1), (-1, 2)):  # the endpoints start from endpoint_seeds, as before
        for name, p in again.net.point(k).items():
            assert (p == module.net.point(k)[name]).all(), (seed, name)


def test_loaded_endpoints_mean_no_endpoint_epochs():
    assert Curve(endpoints=["a.ckpt", "b.ckpt"], endpoint_epochs=7).trained_endpoint_epochs == 0
    assert Curve(endpoint_epochs=7).trained_endpoint_epochs == 7
    assert Curve(endpoint_seeds=[3, 4]).endpoint_seeds == (3, 4)
