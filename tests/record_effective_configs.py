"""Record the effective config of every committed config file, as `fit --print_config` prints it.

The recordings in tests/data/effective_configs/ pin what each config means: a change to the config
files that is meant to keep every run the same (moving shared settings into a base, say) must leave
them unchanged, and tests/test_config_deltas.py checks that it does. A change meant to alter a run
rerecords them deliberately, and the diff shows what it changed:

    python tests/record_effective_configs.py            # rewrite the recordings
    python tests/record_effective_configs.py --check    # exit 1 when a recording differs
    python tests/record_effective_configs.py --repetition  # how much the config files repeat
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
RECORDED = REPO / "tests" / "data" / "effective_configs"
# Overlays are recorded applied to one config each, as a user combines them.
OVERLAID = {"overlays/debug.yaml": "deq.yaml"}


def config_files() -> list[str]:
    """Every committed config a user runs, relative to configs/; the files under a `base/` folder are
    only read through the configs naming them (`base:`), and need not be complete by themselves."""
    out = subprocess.run(["git", "ls-files", "configs"], cwd=REPO, capture_output=True, text=True, check=True)
    return sorted(p.removeprefix("configs/") for p in out.stdout.split()
                  if p.endswith(".yaml") and "base" not in Path(p).parts)


def cases() -> dict[str, list[str]]:
    """recording name -> the config files (relative to configs/) given as --config, in order."""
    found = {}
    for rel in config_files():
        if rel in OVERLAID:
            found[f"{Path(rel).with_suffix('')}+{Path(OVERLAID[rel]).stem}.yaml"] = [OVERLAID[rel], rel]
        else:
            found[rel] = [rel]
    return found


def effective(files: list[str]) -> str:
    """The text `python -m lit_papers fit --config F1 [--config F2 ...] --print_config` prints."""
    from lit_papers.cli import main

    args = ["fit"]
    for rel in files:
        args += ["--config", f"configs/{rel}"]
    out, cwd, argv = io.StringIO(), os.getcwd(), sys.argv
    os.chdir(REPO)
    sys.argv = argv[:1]  # as a command with these arguments only
    try:
        with contextlib.redirect_stdout(out):
            main([*args, "--print_config"])
    except SystemExit as done:
        if done.code not in (0, None):
            raise RuntimeError(f"{' '.join(args)} --print_config exited {done.code}") from None
    finally:
        os.chdir(cwd)
        sys.argv = argv
    return out.getvalue()


def repetition() -> tuple[int, int]:
    """(non-comment lines of all committed config files, bases included; those of them that occur
    verbatim in 3 or more files)."""
    out = subprocess.run(["git", "ls-files", "configs"], cwd=REPO, capture_output=True, text=True, check=True)
    files = {p: [line.rstrip() for line in (REPO / p).read_text().splitlines()
                 if line.strip() and not line.lstrip().startswith("#")]
             for p in out.stdout.split() if p.endswith(".yaml") and (REPO / p).is_file()}
    count = Counter(line for lines in files.values() for line in set(lines))
    total = sum(len(lines) for lines in files.values())
    return total, sum(1 for lines in files.values() for line in lines if count[line] >= 3)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the recordings; write nothing")
    parser.add_argument("--repetition", action="store_true",
                        help="print the share of config lines that recur in 3 or more files; write nothing")
    args = parser.parse_args(argv)
    if args.repetition:
        total, repeated = repetition()
        print(f"{repeated} of {total} non-comment config lines ({repeated / total:.0%}) recur in 3 or more files")
        return 0
    os.environ.setdefault("WANDB_MODE", "disabled")
    differing = []
    for name, files in cases().items():
        text = effective(files)
        path = RECORDED / name
        if args.check:
            if not path.is_file() or yaml.safe_load(path.read_text()) != yaml.safe_load(text):
                differing.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    if differing:
        print("effective config differs from the recording: " + ", ".join(differing), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
