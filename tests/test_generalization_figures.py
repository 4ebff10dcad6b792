"""The CLI run of configs/random_labels.yaml feeds the cross-run Fig. 1a/1b/1c script."""

from conftest import REPO

from lit_papers.generalization.figures import load_run, main


def test_run_folder_to_paper_figures(run_cli, tmp_path):
    folder = run_cli(["fit", "--config", str(REPO / "configs/random_labels.yaml"),
                      "--config", str(REPO / "tests/smoke/random_labels.yaml"),
                      "--data.corruption=partial_labels", "--data.corruption_prob=0.4"])
    assert (folder / "figures" / "generalization_fit.png").is_file()
    run = load_run(folder)
    assert (run["arch"], run["corruption"], run["prob"]) == ("mlp", "partial_labels", 0.4)
    assert len(run["loss_curve"]) == 2  # one full-train evaluation per epoch
    assert 0.0 <= run["test_acc"] <= 1.0 and 0.0 <= run["train_acc"] <= 1.0
    out = tmp_path / "figures"
    main([str(folder.parent), "--out", str(out)])
    assert sorted(p.name for p in out.glob("*.png")) == [
        "generalization_fig1a.png", "generalization_fig1b.png", "generalization_fig1c.png"]
