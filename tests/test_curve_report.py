"""The curve report: reads CurveModule run folders, barrier = max - mean of the endpoints, mean ± sd over pairs."""

import csv
import json

import numpy as np
import pytest

from lit_papers.mode_connectivity import curve_report

KEYS = ("train_loss", "train_nll", "train_err", "test_nll", "test_err", "dl")


def write_run(folder, curve_loss, segment_loss, test_err=(5.0, 6.0, 5.0), curve="bezier", flat=False):
    """A run folder with 3 values of t: train loss (and NLL) along curve and segment, one test-error path;
    `flat`: its config.yaml has the keys from before the curve group (`curve: bezier`)."""
    folder.mkdir(parents=True)
    paths = {"curve": curve_loss, "segment": segment_loss}
    with (folder / "curve_eval.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["t", *[f"{p}/{k}" for p in paths for k in KEYS]])
        for i, t in enumerate((0.0, 0.5, 1.0)):
            row = [t]
            for values in paths.values():
                row += [values[i], values[i], 0.0, 0.1, test_err[i], 0.0 if i == 0 else 2.0]
            w.writerow(row)
    settings = (f"    curve: {curve}\n    endpoint_seeds: [1, 2]\n" if flat else
                f"    curve:\n      kind: {curve}\n      endpoint_seeds: [1, 2]\n")
    (folder / "config.yaml").write_text("model:\n  init_args:\n" + settings)
    return folder


def test_barrier_is_max_minus_mean_of_endpoints_and_cells_are_mean_sd_over_pairs(tmp_path, capsys):
    a = write_run(tmp_path / "a", [0.1, 0.2, 0.3], [0.1, 2.2, 0.3])  # barriers: 0.1 curve, 2.0 segment
    b = write_run(tmp_path / "b", [0.2, 0.5, 0.4], [0.2, 1.3, 0.4])  # 0.2, 1.0
    p = write_run(tmp_path / "p", [0.1, 0.15, 0.3], [0.1, 2.2, 0.3], curve="polychain", flat=True)
    q = write_run(tmp_path / "q", [0.2, 0.3, 0.4], [0.2, 1.3, 0.4], curve="polychain")
    groups = {"Bezier": [curve_report.read_run(a), curve_report.read_run(b)],
              "PolyChain": [curve_report.read_run(p), curve_report.read_run(q)]}
    assert groups["PolyChain"][0]["curve_name"] == "polychain" and groups["Bezier"][0]["endpoint_seeds"] == [1, 2]
    assert groups["PolyChain"][1]["curve_name"] == "polychain" and groups["PolyChain"][0]["endpoint_seeds"] == [1, 2]
    table = curve_report.rows(groups)
    # the PolyChain runs have the Bezier runs' segments (the same endpoint pairs): one segment row
    assert [r["path"] for r in table] == ["straight segment", "Bezier curve (trained)", "PolyChain curve (trained)",
                                          "endpoints w_0 / w_1"]
    segment, bezier = table[0], table[1]
    assert segment["train-loss barrier"] == pytest.approx([2.0, 1.0])
    assert bezier["train-loss barrier"] == pytest.approx([0.1, 0.2])
    assert bezier["test-error barrier (pp)"] == pytest.approx([1.0, 1.0])
    assert bezier["length"] == pytest.approx([4.0, 4.0])
    text = curve_report.markdown_table(table)
    assert "| straight segment | 1.750 ± 0.636 (2.200, 1.300) | 1.500 ± 0.707 (2.000, 1.000) |" in text
    assert "| endpoints w_0 / w_1 | 0.150 / 0.350 | – |" in text
    # a group with other endpoints gets its own segment row
    other = write_run(tmp_path / "o", [0.1, 0.2, 0.3], [0.1, 0.9, 0.3])
    labels = [r["path"] for r in curve_report.rows({**groups, "other": [curve_report.read_run(other)] * 2})]
    assert "straight segment (other endpoints)" in labels
    with pytest.raises(SystemExit):
        curve_report.main(["--group", "Bezier", str(tmp_path)])  # not a run folder: a usage error
    assert "no curve_eval.csv" in capsys.readouterr().err


def test_mnist1d_config_smoke_and_the_report_reproduces_the_logged_summaries(run_cli, tmp_path):
    """configs/mode_connectivity_mnist1d.yaml shortened (1 epoch per endpoint, 1 curve epoch, 5 values
    of t): the report's table, read from the run folder, equals the summaries the fit logged."""
    folder = run_cli(["fit", "--config", "configs/mode_connectivity_mnist1d.yaml",
                      "--config", "tests/smoke/mode_connectivity_mnist1d.yaml"])
    final = json.loads((folder / "summary.json").read_text())["final"]
    run = curve_report.read_run(folder)
    assert run["curve_name"] == "bezier" and len(run["t"]) == 5
    # the curve and the segment share their endpoints (BatchNorm recomputed at each): equal values at t = 0, 1
    for key in ("train_loss", "test_err"):
        assert run["curve"][key][[0, -1]] == pytest.approx(run["segment"][key][[0, -1]], rel=1e-5)
    table = {r["path"]: r for r in curve_report.rows({"Bezier": [run]})}
    for path, label in (("segment", "straight segment"), ("curve", "Bezier curve (trained)")):
        row = table[label]
        for header, key, stat, _ in curve_report.COLUMNS:
            assert row[header] == pytest.approx([final[f"{path}/{key}_{stat}"]], rel=1e-4, abs=1e-5), (path, header)
        assert row["length"] == pytest.approx([final[f"{path}/length"]], rel=1e-4)
    out = tmp_path / "fig.png"
    text = curve_report.main(["--group", "Bezier", str(folder), "--out", str(out)])
    assert "| straight segment |" in text and "| Bezier curve (trained) |" in text
    assert out.stat().st_size > 10_000 and np.isfinite(run["curve"]["train_loss"]).all()
