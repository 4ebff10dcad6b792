"""Two-process DDP (gloo, CPU) gives the same training as one process.

Why it can be exact: with `on_device` batches, rank r of W takes `order[r::W]` of the same
epoch permutation, so the union of the ranks' k-th batches of size B/W is the single process's
k-th batch of size B; DDP averages the ranks' mean gradients, which is the mean gradient over
that union. Weights then agree up to float summation order, and synced metrics agree.
`strategy=ddp` relaunches the command line in each rank, so the DDP run is a subprocess.
"""

from __future__ import annotations

import json

import pytest
import torch
import yaml
from conftest import CONFIGS, REPO
from test_resume import cli_subprocess, smoke_args, weights


def _batch_size(config) -> int | None:
    cfg = yaml.safe_load(config.read_text())
    data = cfg.get("data") or {}
    if not str(data.get("class_path", "")).endswith("VisionDataModule"):
        return None
    return int((data.get("init_args") or {}).get("batch_size", 60))


def _compare(single, ddp, atol: float = 2e-5) -> None:
    a, b = weights(single / "checkpoints" / "last.ckpt"), weights(ddp / "checkpoints" / "last.ckpt")
    assert a.keys() == b.keys()
    for key in a:
        if a[key].is_floating_point():
            torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=atol, msg=lambda m, k=key: f"{k}: {m}")
        else:  # masks, counters: identical on every rank and equal to the single process
            assert torch.equal(a[key], b[key]), key
    sa, sb = (json.loads((f / "summary.json").read_text()) for f in (single, ddp))
    assert sb["num_devices"] == 2 and sa["num_devices"] == 1
    assert sb["global_step"] == sa["global_step"]
    for key, value in sa["final"].items():
        if key.startswith(("val/", "test/")) and not key.endswith("_ms"):
            assert sb["final"].get(key) == pytest.approx(value, rel=1e-3, abs=1e-4), key


def _ddp_case(config, run_cli, tmp_path):
    batch = _batch_size(config)
    if batch is None or batch % 2:
        pytest.skip(f"{config.name}: the exact DDP comparison needs VisionDataModule with an even batch size")
    args = [*smoke_args(config), "--data.init_args.on_device=true", "--test_after_fit=false"]
    single = run_cli([*args, f"--data.init_args.batch_size={batch}"], root=tmp_path / "single")
    ddp = cli_subprocess([*args, f"--data.init_args.batch_size={batch // 2}"], tmp_path / "ddp",
                         tail=("--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"))
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    folders = [p.parent for p in (tmp_path / "ddp").glob("*/*/checkpoints")]
    assert len(folders) == 1, f"both ranks must write one run folder, got {folders}"
    _compare(single, folders[0])


@pytest.mark.slow
def test_ddp_two_processes_equal_one_classifier(run_cli, tmp_path):
    _ddp_case(REPO / "configs" / "classifier.yaml", run_cli, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("config", [c for c in CONFIGS if c.stem != "classifier"], ids=lambda p: p.stem)
def test_ddp_two_processes_equal_one(config, run_cli, tmp_path):
    _ddp_case(config, run_cli, tmp_path)
