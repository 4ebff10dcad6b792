"""`num_classes` and `input_shape` come from the datamodule at parse time: `--print_config` and a run's
config.yaml hold the values used, and rerunning a run's config.yaml trains the same network."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import REPO

from lit_papers.cli import main
from lit_papers.core.derived_args import print_config_request


def _printed(capsys, *args: str) -> dict:
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", *args, "--print_config"])
    assert exit_info.value.code in (0, None)
    return yaml.safe_load(capsys.readouterr().out)


@pytest.mark.parametrize(("config", "classes", "shape"), [("classifier.yaml", 10, [1, 28, 28]),
                                                          ("fge_mnist1d.yaml", 10, [1, 40]),
                                                          ("deq.yaml", 10, [1, 28, 28])])
def test_print_config_shows_what_the_dataset_determines(config, classes, shape, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    init = _printed(capsys, "--config", f"configs/{config}")["model"]["init_args"]
    assert (init["num_classes"], init["input_shape"]) == (classes, shape)


def test_digits_and_a_value_given_by_the_user(capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    init = _printed(capsys, "--config", "configs/classifier.yaml", "--data.init_args.dataset=digits",
                    "--model.init_args.num_classes=12")["model"]["init_args"]
    assert init["input_shape"] == [1, 8, 8] and init["num_classes"] == 12  # the user's value is kept


def test_print_config_flags():
    assert print_config_request(["fit", "--print_config"]) == ("--print_config", {})
    assert print_config_request(["--print_config=skip_null"]) == ("--print_config=skip_null", {"skip_unset": True})
    assert print_config_request(["--print_config=bogus"]) is None  # jsonargparse names the bad flag
    assert print_config_request(["fit", "--config", "x.yaml"]) is None


def test_config_yaml_holds_the_values_and_reruns_the_same_network(run_cli, tmp_path):
    short = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1",
             "--trainer.accelerator=cpu", "--test_after_fit=false"]
    first = run_cli(["fit", "--config", "configs/classifier.yaml", *short])
    saved = yaml.safe_load((first / "config.yaml").read_text())["model"]["init_args"]
    assert (saved["num_classes"], saved["input_shape"]) == (10, [1, 28, 28])
    again = run_cli(["fit", "--config", str(first / "config.yaml")], root=tmp_path / "again")
    states = [torch.load(f / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"] for f in (first, again)]
    assert states[0].keys() == states[1].keys()
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
