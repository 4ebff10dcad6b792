"""Config files as deltas of bases (`base:`, lit_papers/core/config_bases.py): every config resolves
to the effective config recorded in tests/data/effective_configs/ (rerecord deliberately with
tests/record_effective_configs.py), every paper config is a delta, and a bad base is a usage error."""

from __future__ import annotations

import pytest
import yaml
from conftest import PAPER_CONFIGS, REPO
from record_effective_configs import RECORDED, cases, effective

from lit_papers.cli import LitPapersCLI, _cli, main
from lit_papers.core import config_bases, renamed_keys
from lit_papers.errors import UsageError

CASES = cases()


def _lines(path) -> int:
    """Non-blank, non-comment lines of a config file."""
    return sum(1 for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#"))


def _flat(tree, prefix="") -> dict:
    if not isinstance(tree, dict):
        return {prefix: tree}
    return {k: v for key, sub in tree.items() for k, v in _flat(sub, f"{prefix}{key}.").items()}


@pytest.mark.parametrize("name", sorted(CASES))
def test_effective_config_is_the_recorded_one(name):
    """The recordings predate the settings groups (model.lr, not model.optim.lr): the recorded keys are
    renamed as renamed_keys.RENAMED says and every value must be the same. A group field the module did
    not have before (a CNF's optim.momentum) may appear, at its default."""
    recorded = RECORDED / name
    assert recorded.is_file(), f"no recording for {name}: run python tests/record_effective_configs.py"
    now = _flat(yaml.safe_load(effective(CASES[name])))
    then = _flat(renamed_keys.upgrade_mapping(yaml.safe_load(recorded.read_text())))
    groups = {f"model.init_args.{new.split('.')[0]}." for new in renamed_keys.RENAMED.values()}
    new_fields = {k for k in now.keys() - then.keys() if any(k.startswith(g) for g in groups)}
    changed = {k.rstrip("."): (then.get(k), now.get(k)) for k in now.keys() | then.keys()
               if now.get(k) != then.get(k) and k not in new_fields}
    assert not changed, (f"the effective config of {CASES[name]} changed (key: (recorded, now)) {changed}; if "
                         f"meant, rerecord with python tests/record_effective_configs.py and review the diff")


def _merged(paths) -> dict:
    """The files' keys merged in order, mappings key by key (as jsonargparse merges --config files)."""
    def merge(into, update):
        for key, value in update.items():
            if isinstance(value, dict) and isinstance(into.get(key), dict):
                merge(into[key], value)
            else:
                into[key] = value
        return into
    out: dict = {}
    for path in paths:
        merge(out, yaml.safe_load(path.read_text()) or {})
    out.pop(config_bases.KEY, None)
    return out


@pytest.mark.parametrize("config", PAPER_CONFIGS, ids=lambda p: p.stem)
def test_paper_config_is_a_delta(config):
    """Names a base (under a base/ folder), restates none of its values, and is shorter than the config
    it and its bases make together."""
    assert config_bases.KEY in yaml.safe_load(config.read_text()), f"{config.name} names no base"
    bases = config_bases.chain(config)[:-1]
    assert bases and all("base" in b.parts for b in bases)
    inherited, own = _flat(_merged(bases)), _flat(_merged([config]))
    restated = sorted(k.rstrip(".") for k, v in own.items() if k in inherited and inherited[k] == v)
    assert not restated, f"{config.name} restates its base's values: {restated}"
    whole = yaml.safe_dump(_merged([*bases, config]), sort_keys=False).splitlines()
    assert _lines(config) < len(whole), f"{config.name} is not shorter than the config it makes with its bases"


def _write(path, content) -> str:
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return str(path)


def _built(args, monkeypatch):
    """The CLI of `fit <args>` built as for a run (run folder planned and claimed), without training."""
    monkeypatch.setattr(LitPapersCLI, "_run_subcommand", lambda self, subcommand: None)
    return _cli(["fit", *args])


def test_delta_updates_its_bases_key_by_key_and_its_run_is_complete(tmp_path, monkeypatch):
    """A delta's `model.init_args` update its bases'; the run is named after the file the user gave, and
    its config.yaml names no base and rebuilds the same run by itself."""
    monkeypatch.chdir(REPO)
    base = yaml.safe_load((REPO / "configs" / "classifier.yaml").read_text())
    base.pop("experiment")
    (tmp_path / "bases").mkdir()
    _write(tmp_path / "bases" / "classifier.yaml", base)
    _write(tmp_path / "bases" / "longer.yaml", {"base": "classifier.yaml", "trainer": {"max_epochs": 3}})
    delta = _write(tmp_path / "wider.yaml",
                   {"base": "bases/longer.yaml", "model": {"init_args": {"optim": {"lr": 0.5}}}})
    cpu = ["--trainer.accelerator=cpu", f"--run_root={tmp_path / 'runs'}"]
    cli = _built(["--config", delta, *cpu], monkeypatch)
    config = cli.config["fit"]
    assert config.model.init_args.optim.lr == 0.5
    assert config.model.init_args.arch == base["model"]["init_args"]["arch"]
    assert config.trainer.max_epochs == 3
    assert config.trainer.log_every_n_steps == base["trainer"]["log_every_n_steps"]
    assert [str(c) for c in config.config] == [delta]
    assert cli.run_dir == tmp_path / "runs" / "wider" / "version_0"
    # config.yaml is this dump (SaveConfigCallback): complete, no base, the same run when given alone
    saved = cli._parser("fit").dump(config, skip_none=False)
    assert config_bases.KEY not in yaml.safe_load(saved)
    rerun = _built(["--config", _write(tmp_path / "config.yaml", yaml.safe_load(saved)), *cpu], monkeypatch)
    assert yaml.safe_load(rerun._parser("fit").dump(rerun.config["fit"], skip_none=False)) == yaml.safe_load(saved)


@pytest.mark.parametrize("case", ["missing", "cycle", "command line"])
def test_bad_base_is_a_usage_error_naming_the_file(case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if case == "missing":
        config = _write(tmp_path / "delta.yaml", {"base": "base/nowhere.yaml"})
        expected = ["delta.yaml", "nowhere.yaml", "does not exist"]
    elif case == "cycle":
        _write(tmp_path / "a.yaml", {"base": "b.yaml"})
        config = _write(tmp_path / "b.yaml", {"base": ["a.yaml"]})
        expected = ["b.yaml", "a.yaml", "cycle"]
    else:
        config = str(REPO / "configs" / "classifier.yaml")
        expected = ["--base", "--config BASE --config FILE"]
    extra = ["--base", "x.yaml"] if case == "command line" else []
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", config, *extra, f"--run_root={tmp_path / 'runs'}"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and all(e in err for e in expected), err
    assert "Traceback" not in err and not (tmp_path / "runs").exists()


def test_chain_applies_each_listed_base_with_its_own_bases_first(tmp_path):
    for name, content in {"root.yaml": {}, "a.yaml": {"base": "root.yaml"}, "b.yaml": {"base": "root.yaml"},
                          "c.yaml": {"base": ["a.yaml", "b.yaml"]}}.items():
        _write(tmp_path / name, content)
    assert [p.name for p in config_bases.chain(tmp_path / "c.yaml")] == \
        ["root.yaml", "a.yaml", "root.yaml", "b.yaml", "c.yaml"]
    with pytest.raises(UsageError, match="must name a config file"):
        _write(tmp_path / "bad.yaml", {"base": 3})
        config_bases.chain(tmp_path / "bad.yaml")
