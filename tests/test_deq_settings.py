"""The DEQ's settings groups (lit_papers/deq/settings.py): old flat flags land in their group with a
notice, old config files are refused and upgraded, bad values name the field, and a module built from
the groups has the same DEQLayer as the flat keyword arguments give."""

from __future__ import annotations

import inspect

import pytest
from conftest import REPO, printed_model_args, refused_then_upgraded

from lit_papers.cli import main
from lit_papers.core import Optim
from lit_papers.deq import DEQLayer, DEQModule, DEQSequenceModule
from lit_papers.deq.cells import build_cell
from lit_papers.deq.settings import Backward, JacobianPenalty, Solver, layer_kwargs

OLD_DEQ = """\
model:
  class_path: lit_papers.deq.DEQModule
  init_args:
    width: 16
    # the forward solve
    solver: broyden
    max_iter: 9
    backward_max_iter: 7   # the hook's budget
    phantom_tau: 0.5
    jac_weight: 0.25
    jac_freq: 0.5
data:
  class_path: lit_papers.data.VisionDataModule
  init_args:
    dataset: digits
"""

LAYER_ATTRS = ("solver", "max_iter", "tol", "stop_mode", "solver_kwargs", "eval_max_iter", "backward_mode",
               "backward_solver", "backward_max_iter", "backward_tol", "backward_kwargs", "phantom_steps",
               "phantom_tau", "unroll_steps", "pretrain_depth", "jac_probes")


def test_an_old_flag_lands_in_its_group_with_a_notice(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    init, err = printed_model_args(["--config", "configs/deq.yaml", "--model.backward_max_iter=5"], capsys)
    assert init["backward"]["max_iter"] == 5
    assert init["backward"]["tol"] == 0.0001 and init["solver"]["max_iter"] == 20  # the rest as configured
    assert "--model.backward_max_iter is now --model.backward.max_iter" in err


def test_an_old_name_lands_in_the_group_name(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    init, err = printed_model_args(["--config", "configs/deq.yaml", "--model.solver=broyden",
                             "--model.init_args.jac_weight", "0.5"], capsys)
    assert init["solver"]["name"] == "broyden" and init["solver"]["max_iter"] == 20
    assert init["jacobian"]["weight"] == 0.5
    assert "--model.solver.name" in err and "--model.init_args.jacobian.weight" in err


def test_an_old_deq_config_file_is_refused_then_upgraded(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    path = tmp_path / "old_deq.yaml"
    err, text = refused_then_upgraded([], path, OLD_DEQ, capsys)
    for old, new in [("solver", "solver.name"), ("max_iter", "solver.max_iter"),
                     ("backward_max_iter", "backward.max_iter"), ("phantom_tau", "backward.phantom_tau"),
                     ("jac_weight", "jacobian.weight"), ("jac_freq", "jacobian.freq")]:
        assert f"model.init_args.{old} -> model.init_args.{new}" in err
    assert "# the forward solve" in text and "max_iter: 7   # the hook's budget" in text
    init, _ = printed_model_args(["--config", str(path)], capsys)
    assert Solver.of(init["solver"]) == Solver(name="broyden", max_iter=9)
    assert Backward.of(init["backward"]) == Backward(max_iter=7, phantom_tau=0.5)
    assert JacobianPenalty.of(init["jacobian"]) == JacobianPenalty(weight=0.25, freq=0.5)


@pytest.mark.parametrize(("make", "message"), [
    (lambda: Solver(max_iter=0), "solver.max_iter must be >= 1"),
    (lambda: Solver(eval_max_iter=0), "solver.eval_max_iter must be >= 1"),
    (lambda: Solver(tol=-1.0), "solver.tol must be >= 0"),
    (lambda: Solver(stop_mode="max"), "solver.stop_mode must be one of rel, abs"),
    (lambda: Solver(name="newton"), "anderson, broyden, naive"),
    (lambda: Backward(mode="adjoint"), "ift, phantom, unroll"),
    (lambda: Backward(solver="newton"), "anderson, broyden, naive"),
    (lambda: Backward(max_iter=0), "backward.max_iter must be >= 1"),
    (lambda: Backward(phantom_tau=0.0), r"backward.phantom_tau must lie in \(0, 1\]"),
    (lambda: JacobianPenalty(freq=1.5), r"jacobian.freq .* in \[0, 1\]"),
    (lambda: JacobianPenalty(probes=0), "jacobian.probes must be >= 1"),
    (lambda: Solver.of({"maxiter": 3}), "Solver has no setting maxiter"),
    (lambda: DEQModule(backward={"mode": "adjoint"}), "ift, phantom, unroll"),
    (lambda: DEQModule(jacobian={"weight": -1.0}), "jacobian.weight must be >= 0"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_a_bad_group_value_names_the_field(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_a_bad_group_value_on_the_command_line_is_a_usage_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", "configs/deq.yaml", "--model.jacobian.freq=2", "--run_root", str(tmp_path)])
    assert exit_.value.code == 2
    assert "jacobian.freq" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # refused before a run folder


def _attrs(layer: DEQLayer) -> dict:
    return {name: getattr(layer, name) for name in LAYER_ATTRS}


def test_module_from_groups_has_the_layer_of_the_flat_arguments():
    solver = Solver(name="broyden", max_iter=11, tol=1e-5, stop_mode="abs", kwargs={"memory": 7}, eval_max_iter=25)
    backward = Backward(mode="phantom", solver="naive", max_iter=13, tol=1e-6, kwargs={"tau": 0.5},
                        phantom_steps=3, phantom_tau=0.7, unroll_steps=9)
    jacobian = JacobianPenalty(weight=0.2, freq=0.5, probes=4)
    module = DEQModule(cell="mlp", width=8, groups=1, solver=solver, backward=backward, jacobian=jacobian,
                       pretrain_depth=3, num_classes=10, input_shape=(1, 8, 8))
    flat = DEQLayer(build_cell("mlp", 8, groups=1), solver="broyden", max_iter=11, tol=1e-5, stop_mode="abs",
                    solver_kwargs={"memory": 7}, eval_max_iter=25, backward="phantom", backward_solver="naive",
                    backward_max_iter=13, backward_tol=1e-6, backward_kwargs={"tau": 0.5}, phantom_steps=3,
                    phantom_tau=0.7, unroll_steps=9, pretrain_depth=3, jac_probes=4)
    assert _attrs(module.net.deq) == _attrs(flat)
    # hparams hold plain dicts, and a module built from them (load_from_checkpoint) is the same
    assert module.hparams.solver == solver.as_dict() and module.hparams.jacobian == jacobian.as_dict()
    params = inspect.signature(DEQModule.__init__).parameters
    again = DEQModule(**{k: v for k, v in module.hparams.items() if k in params})
    assert _attrs(again.net.deq) == _attrs(flat)
    assert Backward.of(again.hparams.backward) == backward


def test_defaults_are_the_flat_defaults():
    cell = build_cell("mlp", 8, groups=1)
    assert _attrs(DEQLayer(cell, **layer_kwargs())) == _attrs(DEQLayer(cell))
    module = DEQModule(cell="mlp", width=8, groups=1, num_classes=10, input_shape=(1, 8, 8))
    assert _attrs(module.net.deq) == _attrs(DEQLayer(cell))


def test_sequence_module_takes_the_groups_with_its_own_defaults():
    module = DEQSequenceModule(width=16, heads=2, vocab_size=11, max_len=8, optim=Optim(name="adamw", lr=1e-3))
    layer = module.net["deq"]
    assert layer.max_iter == 20 and layer.backward_max_iter == 20 and layer.tol == 1e-3
    module = DEQSequenceModule(width=16, heads=2, vocab_size=11, max_len=8, solver={"name": "naive", "max_iter": 4},
                               backward=Backward(mode="unroll", unroll_steps=3))
    layer = module.net["deq"]
    assert (layer.solver, layer.max_iter, layer.backward_mode, layer.unroll_steps) == ("naive", 4, "unroll", 3)
    assert module.hparams.solver == Solver(name="naive", max_iter=4).as_dict()
