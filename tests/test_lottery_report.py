"""The lottery report: reads run folders (lottery.json or metrics.csv), mean ± std over seeds."""

import csv
import json

import pytest

from lit_papers.lottery import report


def write_run(folder, accs, its, as_csv=False):
    folder.mkdir(parents=True)
    rows = [{"level": i, "percent_remaining": 100 * 0.8**i, "es_test_acc": a, "es_iteration": it}
            for i, (a, it) in enumerate(zip(accs, its))]
    if as_csv:
        with (folder / "metrics.csv").open("w", newline="") as f:
            w = csv.DictWriter(f, ["step", "train/loss"] + [f"lottery/{k}" for k in rows[0]])
            w.writeheader()
            w.writerow({"step": 0, "train/loss": 1.0})  # rows without lottery values are skipped
            for r in rows:
                w.writerow({"step": 1, **{f"lottery/{k}": v for k, v in r.items()}})
    else:
        (folder / "lottery.json").write_text(json.dumps({"config": {}, "levels": rows}))
    return folder


def test_aggregate_mean_std_over_seeds_from_both_formats(tmp_path):
    a = write_run(tmp_path / "a", [0.90, 0.92], [500, 300])
    b = write_run(tmp_path / "b", [0.94, 0.96], [700, 300], as_csv=True)
    runs = [report.read_run(a), report.read_run(b)]
    rows = report.aggregate(runs, "es_test_acc")
    assert rows[0][0] == pytest.approx(100.0) and rows[1][0] == pytest.approx(80.0)
    assert rows[0][1] == pytest.approx(0.92) and rows[0][2] == pytest.approx(0.0282843, rel=1e-5)
    its = report.aggregate(runs, "es_iteration")
    assert its[1][1:] == (300.0, 0.0)
    table = report.markdown_table({"ticket": runs})
    assert "| 100.0 | 92.00 ± 2.83 | 600 ± 141 |" in table


def test_command_writes_figure(tmp_path, capsys):
    a = write_run(tmp_path / "a", [0.9, 0.91, 0.92], [500, 400, 300])
    r = write_run(tmp_path / "r", [0.9, 0.89, 0.85], [500, 600, 700])
    out = tmp_path / "fig.png"
    report.main(["--group", "ticket", str(a), "--group", "reinit", str(r), "--out", str(out)])
    assert out.stat().st_size > 10_000
    assert "reinit test acc" in capsys.readouterr().out
    with pytest.raises(ValueError, match="not a lottery run folder"):
        report.read_run(tmp_path)


def test_sweep_figure_groups_trials_by_control_and_averages_seeds(tmp_path, monkeypatch):
    from lit_papers.lottery import LotteryTicketModule

    calls = {}
    real = report.rounds_figure
    monkeypatch.setattr(report, "rounds_figure", lambda groups, title="": calls.setdefault("g", groups)
                        and real(groups, title))

    def trial(name, control, accs):
        params = {"seed_everything": name, "model.init_args.control": control, "model.init_args.prune_rate": 0.2}
        return {"params": params, "folder": write_run(tmp_path / f"{control}{name}", accs, [500, 300])}

    trials = [trial(0, "ticket", [0.9, 0.95]), trial(1, "ticket", [0.92, 0.97]), trial(0, "reinit", [0.9, 0.8]),
              {"params": {"model.init_args.control": "reinit"}, "folder": tmp_path}]  # a failed trial: skipped
    fig = LotteryTicketModule.sweep_figure(trials)
    assert fig is not None
    groups = calls["g"]
    assert sorted(groups) == ["reinit", "ticket"] and len(groups["ticket"]) == 2 and len(groups["reinit"]) == 1
    assert report.aggregate(groups["ticket"], "es_test_acc")[1][1] == pytest.approx(0.96)


def test_study_folder_groups_members_by_control(tmp_path, capsys):
    def rows(accs, its):
        return [{"level": i, "percent_remaining": 100 * 0.8**i, "es_test_acc": a, "es_iteration": it}
                for i, (a, it) in enumerate(zip(accs, its))]

    members = [{"member": 0, "control": "ticket", "seed": 0, "levels": rows([0.9, 0.94], [500, 200])},
               {"member": 1, "control": "ticket", "seed": 1, "levels": rows([0.9, 0.92], [500, 400])},
               {"member": 2, "control": "reinit", "seed": 0, "levels": rows([0.9, 0.88], [500, 700])},
               {"member": 3, "control": "reinit", "seed": 1, "levels": []}]  # stopped before its first level end
    study = tmp_path / "study"
    study.mkdir()
    (study / "lottery_population.json").write_text(json.dumps({"config": {}, "members": members}))
    groups = report.read_study(study)
    assert {k: len(v) for k, v in groups.items()} == {"ticket": 2, "reinit": 1}
    report.main(["--study", str(study), "--out", str(tmp_path / "s.png")])
    out = capsys.readouterr().out
    assert "| 80.0 | 93.00 ± 1.41 | 300 ± 141 | 88.00 ± 0.00 | 700 ± 0 |" in out
    with pytest.raises(ValueError, match="not a lottery study folder"):
        report.read_study(tmp_path)
    with pytest.raises(SystemExit):
        report.main(["--out", str(tmp_path / "none.png")])


def test_dense_table_pairs_each_run_with_its_own_level_0(tmp_path):
    # seed a: dense 0.90, then +2 pp at 2/3 the iterations; seed b: dense 0.80, then -1 pp at 1.5x
    a = report.read_run(write_run(tmp_path / "a", [0.90, 0.92], [300, 200]))
    b = report.read_run(write_run(tmp_path / "b", [0.80, 0.79], [400, 600]))
    gaps = report.dense_gaps([a, b])
    assert gaps[0]["acc_diff"] == (0.0, 0.0) and gaps[0]["it_ratio"] == (1.0, 0.0)
    assert gaps[1]["acc_diff"][0] == pytest.approx(0.5) and gaps[1]["acc_diff"][1] == pytest.approx(2.1213203)
    assert gaps[1]["it_ratio"][0] == pytest.approx((2 / 3 + 1.5) / 2) and gaps[1]["above"] == 1
    table = report.dense_table({"ticket": [a, b]})
    assert "| 80.0 | +0.50 ± 2.12 | 1.08 ± 0.59 | 1/2 |" in table
