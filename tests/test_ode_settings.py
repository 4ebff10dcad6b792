"""`model.ode` (neural_ode/settings.py: ODESolve), the solve settings of the neural-ODE modules: old flat
flags still land in the group, old config files are refused and upgraded, bad values name their field,
and each module's ODE block is solved exactly as its flat arguments used to set it."""

from __future__ import annotations

import inspect

import pytest
import yaml
from conftest import REPO, printed_model_args, refused_then_upgraded

from lit_papers.cli import main
from lit_papers.neural_ode import CNFModule, DensityMatchingModule, LatentODEModule, NeuralODEModule, ODESolve

OLD = """\
model:
  class_path: lit_papers.neural_ode.LatentODEModule
  init_args:
    # a fixed-step solve
    method: rk4   # four evaluations a step
    step_size: 0.05
    rtol: 0.01
    adjoint: true
"""


def _solve(block) -> dict:
    return {"method": block.method, "rtol": block.rtol, "atol": block.atol, "eval_rtol": block.eval_rtol,
            "eval_atol": block.eval_atol, "step_size": block.step_size, "adjoint": block.adjoint,
            "max_num_steps": block.max_num_steps}


def test_an_old_flag_lands_in_the_group(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", "configs/neural_ode.yaml", "--model.rtol=1e-4", "--model.init_args.max_num_steps",
              "50", "--print_config"])
    assert exit_.value.code in (0, None)
    out = capsys.readouterr()
    ode = yaml.safe_load(out.out)["model"]["init_args"]["ode"]
    assert ode["rtol"] == 1e-4 and ode["max_num_steps"] == 50
    assert ode["method"] == "rk4" and ode["step_size"] == 0.25 and ode["atol"] == 1e-3  # the config's, kept
    assert "--model.ode.rtol" in out.err and "--model.init_args.ode.max_num_steps" in out.err


def test_an_old_config_file_is_refused_then_upgraded(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    path = tmp_path / "old.yaml"
    err, text = refused_then_upgraded(["--config", "configs/latent_ode.yaml"], path, OLD, capsys)
    for key in ("method", "step_size", "rtol", "adjoint"):
        assert f"model.init_args.{key} -> model.init_args.ode.{key}" in err
    assert "# a fixed-step solve" in text and "method: rk4   # four evaluations a step" in text
    ode = printed_model_args(["--config", "configs/latent_ode.yaml", "--config", str(path)], capsys)[0]["ode"]
    # the upgraded file's keys, and latent_ode.yaml's atol under them
    assert ODESolve.of(ode) == ODESolve(method="rk4", step_size=0.05, rtol=0.01, atol=1e-4, adjoint=True)


@pytest.mark.parametrize(("values", "message"), [
    ({"method": "rk45"}, "ode.method.*valid methods.*dopri5"),
    ({"rtol": 0.0}, "ode.rtol must be positive"),
    ({"atol": -1e-3}, "ode.atol must be positive"),
    ({"eval_rtol": 0.0}, "ode.eval_rtol must be positive"),
    ({"step_size": -0.1}, "ode.step_size must be positive"),
    ({"max_num_steps": 0}, "ode.max_num_steps must be >= 1"),
])
def test_a_bad_value_names_the_field(values, message):
    with pytest.raises(ValueError, match=message):
        ODESolve(**values)
    with pytest.raises(ValueError, match=message):
        CNFModule(dim=2, ode=values)  # as a dict, what the CLI and checkpoints hand over


def test_a_bad_value_on_the_command_line_exits_2_naming_the_field(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", "--config", "configs/neural_ode.yaml", "--model.ode.step_size=0", "--trainer.max_epochs=1",
              "--trainer.fast_dev_run=true"])
    assert exit_.value.code == 2
    assert "ode.step_size must be positive" in capsys.readouterr().err


def test_neural_ode_module_solves_as_the_group_says_and_its_variant_decides_the_adjoint():
    ode = ODESolve(method="rk4", rtol=1e-4, atol=1e-5, step_size=0.5, adjoint=False, max_num_steps=20)
    shapes = {"channels": 4, "num_classes": 3, "input_shape": (1, 8, 8), "nfe_tolerances": ()}
    odenet = NeuralODEModule(variant="odenet", ode=ode, **shapes)
    rknet = NeuralODEModule(variant="rknet", ode=ODESolve(method="rk4", rtol=1e-4, atol=1e-5, step_size=0.5,
                                                          max_num_steps=20), **shapes)
    expected = {"method": "rk4", "rtol": 1e-4, "atol": 1e-5, "eval_rtol": 1e-4, "eval_atol": 1e-5,
                "step_size": 0.5, "max_num_steps": 20}
    assert _solve(odenet.ode_block) == {**expected, "adjoint": True}  # ode.adjoint is not read
    assert _solve(rknet.ode_block) == {**expected, "adjoint": False}
    assert odenet.hparams.ode == ode.as_dict()  # a plain dict in hparams
    params = inspect.signature(NeuralODEModule.__init__).parameters
    again = NeuralODEModule(**{k: v for k, v in odenet.hparams.items() if k in params})  # the dict read back
    assert _solve(again.ode_block) == _solve(odenet.ode_block)


def test_each_module_keeps_its_own_defaults():
    cnf = CNFModule(dim=2, hidden=(8,))
    assert _solve(cnf.flow.block) == {"method": "dopri5", "rtol": 1e-5, "atol": 1e-5, "eval_rtol": 1e-5,
                                      "eval_atol": 1e-5, "step_size": None, "adjoint": True, "max_num_steps": 1000}
    matching = DensityMatchingModule(flow="planar_cnf", width=4)
    assert _solve(matching.flow.cnf.block) == {"method": "dopri5", "rtol": 1e-3, "atol": 1e-3, "eval_rtol": 1e-5,
                                               "eval_atol": 1e-5, "step_size": None, "adjoint": False,
                                               "max_num_steps": 1000}
    latent = LatentODEModule()
    assert _solve(latent.model.block) == {"method": "dopri5", "rtol": 1e-3, "atol": 1e-4, "eval_rtol": 1e-3,
                                          "eval_atol": 1e-4, "step_size": None, "adjoint": False,
                                          "max_num_steps": 1000}
    fixed = LatentODEModule(ode={"method": "rk4", "step_size": 0.05, "atol": 1e-4, "adjoint": False})
    assert (fixed.model.block.method, fixed.model.block.step_size) == ("rk4", 0.05)


def test_a_partial_group_on_the_command_line_keeps_the_modules_other_defaults(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    ode = printed_model_args(["--config", "configs/cnf.yaml", "--model=lit_papers.neural_ode.CNFModule",
                              "--model.ode.method=rk4"], capsys)[0]["ode"]
    assert ode["method"] == "rk4" and ode["adjoint"] is True
