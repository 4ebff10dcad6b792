"""Settings groups (lit_papers/core/settings.py) and the keys they replaced (core/renamed_keys.py): an
old key on the command line still works, renamed with a notice; a config file with old keys is refused
naming each new key, and `upgrade-config` rewrites it (comments kept) into a file that means the same."""

from __future__ import annotations

import inspect
import typing
import subprocess

import lightning
import pytest
import torch
import yaml
from conftest import REPO, printed_model_args, refused_then_upgraded

import lit_papers.modules  # noqa: F401  (every module)
from lit_papers.core import Optim, renamed_keys
from lit_papers.core.settings import Group
from lit_papers.errors import UsageError
from lightning.pytorch import LightningModule

OLD = """\
# an old config
model:
  class_path: lit_papers.core.ClassifierModule
  init_args:
    arch: mlp
    # the optimizer
    optimizer: sgd   # plain SGD
    lr: 0.05
    arch_kwargs:
      hidden: [32]
    milestones:
    - 0.3
    - 0.6
    lr_schedule: step
    gamma: 0.5
data:
  class_path: lit_papers.data.VisionDataModule
  init_args:
    dataset: digits
"""


def _modules() -> list[type]:
    out, todo = [], [LightningModule]
    while todo:
        cls = todo.pop()
        for sub in cls.__subclasses__():
            if sub.__module__.startswith("lit_papers."):
                out.append(sub)
            todo.append(sub)
    return out


def test_upgrade_text_groups_the_old_keys_and_keeps_comments():
    new = renamed_keys.upgrade_text(OLD)
    assert yaml.safe_load(new) == renamed_keys.upgrade_mapping(yaml.safe_load(OLD))
    init = yaml.safe_load(new)["model"]["init_args"]
    assert init["optim"] == {"name": "sgd", "lr": 0.05, "milestones": [0.3, 0.6], "schedule": "step", "gamma": 0.5}
    assert init["arch_kwargs"] == {"hidden": [32]} and init["arch"] == "mlp"
    assert "# an old config" in new and "# the optimizer" in new and "name: sgd   # plain SGD" in new
    assert renamed_keys.upgrade_text(new) == new  # nothing left to move
    assert renamed_keys.old_keys(yaml.safe_load(new)) == []


def test_a_name_where_a_group_now_is_moves_and_a_group_stays():
    old = {"model": {"init_args": {"solver": "broyden", "backward": {"mode": "ift"}}}}
    assert renamed_keys.old_keys(old) == [("model.init_args.solver", "model.init_args.solver.name")]


@pytest.mark.parametrize("config", sorted(p.relative_to(REPO) for folder in ("configs", "tests/smoke")
                                           for p in (REPO / folder).rglob("*.yaml")), ids=str)
def test_committed_configs_use_the_groups(config):
    text = (REPO / config).read_text()
    assert renamed_keys.old_keys(yaml.safe_load(text) or {}) == [], f"run upgrade-config on {config}"
    assert renamed_keys.upgrade_text(text) == text  # a config in the new form is left as it is


def test_no_module_has_a_setting_named_like_an_old_key():
    """So renaming an old key can never take a module's own setting away: only a group may keep an
    old key's name (`solver`, `backward`, `curve`)."""
    for cls in _modules():
        hints = typing.get_type_hints(cls.__init__)
        for name in inspect.signature(cls.__init__).parameters.keys() & renamed_keys.RENAMED.keys():
            hint = hints.get(name)
            is_group = isinstance(hint, type) and issubclass(hint, Group)
            assert name in renamed_keys.NAME_KEYS and is_group, f"{cls.__name__}.{name}: {hint}"


def test_every_module_takes_an_optim_group():
    names = {cls.__name__ for cls in _modules() if "optim" in inspect.signature(cls.__init__).parameters}
    assert {"ClassifierModule", "CurveModule", "FGEModule", "LotteryTicketModule", "LotteryPopulationModule",
            "RandomLabelModule", "DEQModule", "DEQSequenceModule", "NeuralODEModule", "CNFModule",
            "DensityMatchingModule", "LatentODEModule"} <= names


def test_an_old_flag_is_renamed_with_a_notice(monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    init, err = printed_model_args(["--config", "configs/classifier.yaml", "--model.lr=0.01",
                                    "--model.init_args.lr_schedule", "cosine"], capsys)
    optim = init["optim"]
    assert "note: --model.lr is now --model.optim.lr" in err
    assert optim["lr"] == 0.01 and optim["schedule"] == "cosine" and optim["name"] == "adam"


def test_an_old_flag_notice_names_the_new_flag(capsys):
    argv = renamed_keys.rewrite_flags(["--model.init_args.lr=0.3", "--model.arch", "mlp"])
    assert argv == ["--model.init_args.optim.lr=0.3", "--model.arch", "mlp"]
    assert "--model.init_args.optim.lr" in capsys.readouterr().err


def test_an_old_config_file_is_refused_then_upgraded(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(REPO)
    path = tmp_path / "old.yaml"
    err, text = refused_then_upgraded([], path, OLD, capsys)
    assert "model.init_args.lr -> model.init_args.optim.lr" in err
    assert "# the optimizer" in text
    optim = printed_model_args(["--config", str(path)], capsys)[0]["optim"]
    assert Optim.of(optim) == Optim(name="sgd", lr=0.05, milestones=[0.3, 0.6], schedule="step", gamma=0.5)


def test_upgrade_config_prints_without_in_place(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text(OLD)
    out = subprocess.run(["python", "-m", "lit_papers", "upgrade-config", str(path)], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    assert out == renamed_keys.upgrade_text(OLD) and path.read_text() == OLD


def test_groups_are_plain_dicts_in_hparams_and_load_back():
    from lit_papers.core import ClassifierModule

    module = ClassifierModule(arch="mlp", num_classes=3, input_shape=(1, 4, 4), optim=Optim(name="sgd", lr=0.2))
    assert module.hparams.optim == Optim(name="sgd", lr=0.2).as_dict()
    again = ClassifierModule(**module.hparams)  # what load_from_checkpoint does
    assert Optim.of(again.hparams.optim) == Optim(name="sgd", lr=0.2)


def test_a_bad_group_value_names_the_setting():
    with pytest.raises(ValueError, match="optim.lr must be positive"):
        Optim(lr=0)
    with pytest.raises(ValueError, match="valid optimizer names"):
        Optim(name="lion")
    with pytest.raises(ValueError, match="has no setting lrate"):
        Optim.of({"lrate": 0.1})


# -- files the text rewrite cannot or must not take apart -------------------------------------------
def test_a_setting_given_both_ways_is_refused_naming_both():
    both = OLD.replace("    lr: 0.05\n", "    lr: 0.05\n    optim:\n      lr: 0.2\n")
    with pytest.raises(UsageError, match=r"model.init_args.lr and model.init_args.optim.lr both set"):
        renamed_keys.upgrade_text(both)
    with pytest.raises(UsageError, match="both set"):
        renamed_keys.upgrade_mapping(yaml.safe_load(both))


def test_a_flow_style_model_block_is_refused_not_left_as_it_was():
    flow = "model: {class_path: lit_papers.core.ClassifierModule, init_args: {lr: 0.3, arch: mlp}}\n"
    with pytest.raises(UsageError, match="move them by hand"):
        renamed_keys.upgrade_text(flow)
    assert renamed_keys.upgrade_mapping(yaml.safe_load(flow))["model"]["init_args"] == {
        "arch": "mlp", "optim": {"lr": 0.3}}


def test_crlf_files_keep_their_line_endings():
    new = renamed_keys.upgrade_text(OLD.replace("\n", "\r\n"))
    assert "\r\n" in new and "\n" not in new.replace("\r\n", "")
    assert yaml.safe_load(new) == yaml.safe_load(renamed_keys.upgrade_text(OLD))


def test_a_name_moves_into_its_group_whatever_the_key_order():
    """`max_iter` before `solver: broyden` must not lose the solver's name."""
    for order in (["max_iter", "solver"], ["solver", "max_iter"]):
        init = {k: {"max_iter": 9, "solver": "broyden"}[k] for k in order}
        upgraded = renamed_keys.upgrade_hparams(init)
        assert upgraded == {"solver": {"name": "broyden", "max_iter": 9}}


# -- checkpoints written before the groups -----------------------------------------------------------
def _flat_checkpoint(tmp_path):
    """A ClassifierModule checkpoint whose hyper-parameters use the flat keys (as written before the groups)."""
    from lit_papers.core import ClassifierModule

    module = ClassifierModule(arch="mlp", num_classes=3, input_shape=(1, 4, 4),
                              optim=Optim(name="sgd", lr=0.2, schedule="cosine"))
    flat = {k: v for k, v in module.hparams.items() if k != "optim"}
    flat.update(optimizer="sgd", lr=0.2, momentum=0.9, weight_decay=0.0, nesterov=False, lr_schedule="cosine",
                milestones=[0.5, 0.75], gamma=0.1, _class_path="lit_papers.core.ClassifierModule")
    path = tmp_path / "old.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": flat,
                "pytorch-lightning_version": lightning.__version__}, path)
    return module, path


def test_load_module_reads_a_checkpoint_with_flat_keys_into_the_groups(tmp_path):
    from lit_papers.core import ClassifierModule
    from lit_papers.core.load_module import load_module

    module, path = _flat_checkpoint(tmp_path)
    loaded = load_module(ClassifierModule, path)
    assert Optim.of(loaded.hparams.optim) == Optim(name="sgd", lr=0.2, schedule="cosine")
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in module.state_dict().items())


def test_ckpt_path_with_flat_keys_parses_into_the_groups(tmp_path, monkeypatch):
    from lit_papers.cli import LitPapersCLI, _cli

    monkeypatch.chdir(REPO)
    monkeypatch.setattr(LitPapersCLI, "_run_subcommand", lambda self, subcommand: None)
    _, path = _flat_checkpoint(tmp_path)
    cli = _cli(["fit", "--config", "configs/classifier.yaml", "--ckpt_path", str(path),
                "--trainer.accelerator=cpu", f"--run_root={tmp_path / 'runs'}"])
    optim = cli.config["fit"]["model"]["init_args"]["optim"]
    assert Optim.of(optim.as_dict() if hasattr(optim, "as_dict") else dict(optim)) == \
        Optim(name="sgd", lr=0.2, schedule="cosine")
