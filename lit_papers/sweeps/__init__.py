"""The offline sweep runner: `python -m lit_papers sweep sweeps/X.yaml` runs a W&B sweep file on one machine.

sweep_file.py reads and checks the file and builds each trial's command line as `wandb agent`
would; proposals.py asks W&B's sweep engine (the `sweeps` package) for the next trial; state.py
keeps `<run_root>/<sweep>/sweep_state.json` and the lock; trial.py starts one trial as a
subprocess with its own thread budget and records its result; runner.py runs N trials at once,
resumes a partly done sweep and is the entry point; report.py writes the table, CSV and figure
from the values each trial ran (its run folder's config.yaml).

Layer: entry point. It imports the leaves (`errors.py`); a paper's `sweep_figure` hook is found
by the class path in a trial's config.yaml, not imported by name.
"""
