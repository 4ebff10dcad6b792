"""Shared fixtures: run the CLI in-process into a temporary run root, offline and single-threaded."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
torch.set_num_threads(1)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").glob("*.yaml"))
PAPER_CONFIGS = sorted((REPO / "configs" / "paper").glob("*.yaml"))


def printed_model_args(args: list[str], capsys) -> tuple[dict, str]:
    """(the model's init_args, stderr) of `fit <args> --print_config`, run in-process."""
    import yaml

    from lit_papers.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["fit", *args, "--print_config"])
    assert exit_.value.code in (0, None)
    out = capsys.readouterr()
    return yaml.safe_load(out.out)["model"]["init_args"], out.err


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
