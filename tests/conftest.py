"""Shared fixtures: run the CLI in-process into a temporary run root, offline and single-threaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from lightning.pytorch.callbacks import Callback

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
PAPER_CONFIGS = sorted((REPO / "configs" / "paper").glob("*.yaml"))


class StopAtEpoch(Callback):
    """Stops a fit at the end of epoch `epoch` (a run cut short, to resume)."""

    def __init__(self, epoch):
        self.epoch = epoch

    def on_train_epoch_end(self, trainer, module):
        if trainer.current_epoch == self.epoch:
            trainer.should_stop = True


def printed_model_args(args: list[str], capsys) -> tuple[dict, str]:
    """(the model's init_args, stderr) of `fit <args> --print_config`, run in-process."""
    import yaml

    from lit_papers.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["fit", *args, "--print_config"])
    assert exit_.value.code in (0, None)
    out = capsys.readouterr()
    return yaml.safe_load(out.out)["model"]["init_args"], out.err


def refused_then_upgraded(config_args: list[str], path: Path, text: str, capsys) -> tuple[str, str]:
    """`text` (a config with keys from before the settings groups) written to `path` and given as
    `fit <config_args> --config path`: refused with exit 2 naming upgrade-config; then
    `upgrade-config path --in-place`. Returns (the refusal's stderr, the upgraded text)."""
    from lit_papers.cli import main

    path.write_text(text)
    with pytest.raises(SystemExit) as exit_:
        main(["fit", *config_args, "--config", str(path), "--print_config"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and "upgrade-config" in err
    main(["upgrade-config", str(path), "--in-place"])
    return err, path.read_text()


@pytest.fixture
def run_cli(tmp_path, monkeypatch):
    """`run_cli(["fit", "--config", ...]) -> Path` of the run folder (under tmp_path/runs)."""
    from lit_papers.cli import main

    monkeypatch.chdir(REPO)
    monkeypatch.delenv("LIT_PAPERS_RUN_VERSION", raising=False)
    monkeypatch.delenv("LIT_PAPERS_RUN_DIR", raising=False)

    def run(args: list[str], root: Path | None = None) -> Path | None:
        root = root or tmp_path / "runs"
        cli = main([*args, f"--run_root={root}", "--trainer.enable_progress_bar=false",
                    "--trainer.enable_model_summary=false"])
        return getattr(cli, "run_dir", None)

    return run


@pytest.fixture(autouse=True)
def _fresh_version_env(monkeypatch):
    monkeypatch.delenv("LIT_PAPERS_RUN_VERSION", raising=False)
    monkeypatch.delenv("LIT_PAPERS_RUN_DIR", raising=False)
