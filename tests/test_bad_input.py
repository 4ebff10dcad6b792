"""One test per row of docs/reliability.md: each bad input gets a clear message naming the fix,
the right exit code (2 = usage error, 1 = the run failed), and leaves existing run folders as
they were (and, for usage errors, creates none)."""

from __future__ import annotations

import errno
import hashlib
from pathlib import Path

import pytest
from conftest import REPO

from lit_papers.cli import main

SHORT = ["--trainer.max_epochs=2", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
         "--trainer.limit_test_batches=1", "--trainer.enable_progress_bar=false",
         "--trainer.enable_model_summary=false", "--trainer.accelerator=cpu", "--test_after_fit=false"]


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(root.rglob("*"))}


@pytest.fixture
def root(tmp_path, monkeypatch):
    """A run root holding an earlier run of `classifier` (its files must never change)."""
    monkeypatch.chdir(REPO)
    run = tmp_path / "runs" / "classifier" / "version_0"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("experiment: classifier\n")
    (run / "summary.json").write_text('{"status": "finished"}\n')
    (run / "metrics.csv").write_text("step,val/acc\n0,0.5\n")
    return tmp_path / "runs"


def run_bad(args: list[str], root: Path, capsys, code: int = 2, new_folders: bool = False) -> str:
    """Run the CLI; assert the exit code and that existing run folders are untouched. Returns stderr."""
    before = snapshot(root)
    with pytest.raises(SystemExit) as exit_info:
        main([*args, f"--run_root={root}"])
    err = capsys.readouterr().err
    assert exit_info.value.code == code, err[-2000:]
    after = snapshot(root)
    assert {k: v for k, v in after.items() if k in before} == before, "an existing run folder changed"
    if not new_folders:
        assert after.keys() == before.keys(), f"created {sorted(after.keys() - before.keys())}"
    assert "Traceback" not in err
    return " ".join(err.split())


def config(name: str) -> str:
    path = REPO / "configs" / f"{name}.yaml"
    if not path.exists():
        pytest.skip(f"configs/{name}.yaml does not exist yet")
    return str(path)


def test_unknown_model_class(root, capsys):
    err = run_bad(["fit", "--config", config("classifier"), "--model=NoSuchModule"], root, capsys)
    assert "NoSuchModule" in err


def test_unknown_dataset(root, capsys):
    err = run_bad(["fit", "--config", config("classifier"), "--data.init_args.dataset=imagenet9"], root, capsys)
    assert "imagenet9" in err and "mnist5k" in err  # names the valid choices


@pytest.mark.parametrize(("name", "key", "valid"), [
    ("deq", "model.init_args.solver.name", "anderson"),
    ("mode_connectivity", "model.init_args.curve.kind", "bezier"),
    ("lottery", "model.init_args.strategy", "layerwise"),
    ("random_labels", "data.init_args.corruption", "random_labels"),
    ("fge", "model.init_args.schedule", "fge"),
])
def test_unknown_method_name(name, key, valid, root, capsys):
    err = run_bad(["fit", "--config", config(name), f"--{key}=no_such_method"], root, capsys)
    assert "no_such_method" in err and valid in err


@pytest.mark.parametrize("arg", ["--trainer.max_epochs=ten", "--model.init_args.optim.lr=fast",
                                 "--data.init_args.batch_size=1.5"])
def test_wrong_type(arg, root, capsys):
    err = run_bad(["fit", "--config", config("classifier"), arg], root, capsys)
    assert arg.split("=")[0].lstrip("-").split(".")[-1] in err
    # the error and where the help is, not the 60-line usage of every option above it
    assert "usage:" not in err and "python -m lit_papers fit --help" in err and len(err.splitlines()) < 20


@pytest.mark.parametrize("arg", ["--data.init_args.batch_size=-5", "--data.init_args.val_size=-1",
                                 "--data.init_args.batch_size=0"])
def test_negative_or_zero_size(arg, root, capsys):
    err = run_bad(["fit", "--config", config("classifier"), arg], root, capsys)
    assert arg.split("=")[0].split(".")[-1] in err


def test_missing_checkpoint_file(root, capsys):
    err = run_bad(["fit", "--config", config("classifier"), "--ckpt_path=/no/such/run/last.ckpt"], root, capsys)
    assert "no such checkpoint file" in err


def test_ckpt_path_last_without_any_run(root, capsys):
    err = run_bad(["fit", "--config", config("classifier"), "--ckpt_path=last", "--experiment=never_trained"],
                  root, capsys)
    assert "never_trained" in err and "Train first" in err


@pytest.mark.parametrize("content", [b"", b"\x80\x04garbage" * 50], ids=["empty", "garbage"])
def test_corrupt_checkpoint(content, root, capsys):
    last = root / "classifier" / "version_0" / "checkpoints" / "last.ckpt"
    last.write_bytes(content)
    err = run_bad(["fit", "--config", config("classifier"), "--ckpt_path=last"], root, capsys)
    assert "not a readable PyTorch checkpoint" in err
    err = run_bad(["fit", "--config", config("classifier"), f"--ckpt_path={last}"], root, capsys)
    assert "not a readable PyTorch checkpoint" in err


@pytest.fixture
def classifier_ckpt(tmp_path, run_cli):
    folder = run_cli(["fit", "--config", str(REPO / "configs" / "classifier.yaml"), *SHORT],
                     root=tmp_path / "made")
    return folder / "checkpoints" / "last.ckpt"


@pytest.mark.slow
def test_checkpoint_of_another_module(classifier_ckpt, root, capsys):
    """Lightning would read the checkpoint's class into the config and silently train it instead."""
    err = run_bad(["fit", "--config", config("deq"), f"--ckpt_path={classifier_ckpt}"], root, capsys)
    assert "ClassifierModule" in err and "DEQModule" in err and "config.yaml" in err


def test_config_of_another_module(root, capsys):
    """The DEQ's init args given to the classifier: jsonargparse names the first foreign key."""
    err = run_bad(["fit", "--config", config("classifier"), "--model.init_args.solver.name=anderson"], root, capsys)
    assert "solver" in err


@pytest.mark.slow
def test_nan_loss_stops_with_run_failed(root, capsys):
    err = run_bad(["fit", "--config", config("classifier"), *SHORT, "--model.init_args.optim.lr=1e30",
                   "--trainer.log_every_n_steps=1", "--experiment=nan"], root, capsys, code=1, new_folders=True)
    assert "run failed" in err and "lr" in err
    summary = (root / "nan" / "version_0" / "summary.json").read_text()
    assert "failed: RunFailed" in summary


def test_exploding_ode_solve_stops_with_the_options_that_help(root, capsys):
    # rtol 1e-12 with a budget of 3 steps: dopri5 cannot finish the first solve.
    err = run_bad(["fit", "--config", config("neural_ode"), *SHORT, "--model.init_args.ode.rtol=1e-12",
                   "--model.init_args.ode.atol=1e-12", "--model.init_args.ode.max_num_steps=3", "--experiment=ode"],
                  root, capsys, code=1, new_folders=True)
    assert err.startswith("run failed: the ODE solver failed") and "method='rk4'" in err
    assert "Traceback" not in err
    assert "failed: ODESolverError" in (root / "ode" / "version_0" / "summary.json").read_text()


@pytest.mark.slow
def test_disk_full_while_checkpointing(root, capsys, monkeypatch):
    """The second epoch's checkpoint write fails with ENOSPC: exit 1, last.ckpt of epoch 1 intact."""
    import lightning.fabric.plugins.io.torch_io as torch_io
    import torch

    real = torch_io._atomic_save

    def full_disk(checkpoint, filepath):
        if checkpoint["global_step"] > 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(filepath))
        real(checkpoint, filepath)

    monkeypatch.setattr(torch_io, "_atomic_save", full_disk)
    err = run_bad(["fit", "--config", config("classifier"), *SHORT, "--experiment=full"], root, capsys, code=1,
                  new_folders=True)
    assert "no space left on device" in err and "--ckpt_path last" in err
    last = root / "full" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 2


def _sweep_file(tmp_path, text: str) -> Path:
    path = tmp_path / "bad_sweep.yaml"
    path.write_text(text)
    return path


GOOD = """method: grid
metric: {name: test/acc, goal: maximize}
parameters:
  %s: {values: [0.001]}
command: ["${env}", "${interpreter}", -m, lit_papers, fit, --config, configs/classifier.yaml, "${args}"]
"""


def test_sweep_file_with_unknown_top_level_key(tmp_path, root, capsys):
    path = _sweep_file(tmp_path, GOOD % "model.init_args.optim.lr" + "early_stop: true\n")
    err = run_bad(["sweep", str(path)], root, capsys)
    assert "early_stop" in err and "schema" in err


@pytest.mark.slow
def test_sweep_file_with_unknown_parameter_key(tmp_path, root, capsys):
    path = _sweep_file(tmp_path, GOOD % "model.init_args.learning_rate")
    err = run_bad(["sweep", str(path)], root, capsys)
    assert "learning_rate" in err and "not a valid command" in err


def test_sweep_random_without_count(tmp_path, root, capsys):
    path = _sweep_file(tmp_path, (GOOD % "model.init_args.optim.lr").replace("method: grid", "method: random"))
    err = run_bad(["sweep", str(path)], root, capsys)
    assert "--count" in err
