"""Config files as deltas: a top-level `base:` key names the config file(s) a config file builds on.

    # configs/paper/neural_ode_mnist_rknet.yaml
    base: base/neural_ode_mnist.yaml      # relative to this file
    experiment: neural_ode_mnist_rknet
    model:
      init_args:
        variant: rknet

`--config FILE` then means `--config BASE --config FILE`: the base is applied first and the file's
own keys override it, merged key by key exactly as several `--config` flags are (a model's
`init_args` update the base's, they do not replace them). A base may name its own base; `base:` may
list several files, applied in order, each preceded by its own bases. A missing base or a cycle is a
usage error naming the file.

Why not jsonargparse's own `config:` key inside a config file: it applies the named file and then
sets the including file's top-level keys over it whole, so a delta's `trainer:` or `model:` block
would replace the base's block instead of updating it.

The CLI reads `base` before parsing and drops it after, so `--print_config` and a run's config.yaml
hold the complete merged config, rerunnable without the base.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import yaml

from lit_papers.errors import UsageError

KEY = "base"
_CONFIG_FLAGS = ("--config", "-c")


def bases_of(path: Path) -> list[Path]:
    """The base files `path` names, resolved relative to it ([] when it names none)."""
    try:
        content = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        return []  # not ours to report: jsonargparse names the syntax error when it parses the file
    named = content.get(KEY) if isinstance(content, dict) else None
    if named is None:
        return []
    if isinstance(named, str):
        named = [named]
    if not isinstance(named, list) or not named or not all(isinstance(n, str) and n for n in named):
        raise UsageError(f"{path}: `{KEY}:` must name a config file or a list of config files, "
                         f"relative to {path.name}; got {named!r}.")
    found = []
    for name in named:
        base = (path.parent / name).resolve()
        if not base.is_file():
            raise UsageError(f"{path}: its base {name!r} does not exist (looked for {_shown(base)}); a base path is "
                             f"relative to the file that names it.")
        found.append(base)
    return found


def chain(path: Path, _stack: tuple[Path, ...] = ()) -> list[Path]:
    """Every file `--config path` applies, in order: its bases (each with its own bases first), then it."""
    path = Path(path)
    key = path.resolve()
    if key in _stack:
        loop = " -> ".join(_shown(p) for p in (*_stack[_stack.index(key):], key))
        raise UsageError(f"{path}: config bases form a cycle ({loop}); remove `{KEY}:` from one of them.")
    files = []
    for base in bases_of(path):
        files += chain(base, (*_stack, key))
    return [*files, path]


def expand(argv: Sequence[str]) -> tuple[list[str], list[bool]]:
    """`argv` with each `--config FILE` preceded by `--config BASE` for every base of FILE, and for
    each `--config` of the result whether the user gave it (False: a base). Values that are no file
    (a YAML string, a missing path) are left for jsonargparse to judge."""
    out: list[str] = []
    given: list[bool] = []
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == f"--{KEY}" or (isinstance(arg, str) and arg.startswith(f"--{KEY}=")):
            raise UsageError(f"--{KEY} is read from config files only: give a base on the command line as "
                             f"--config BASE --config FILE.")
        given_config = _config_arg(argv, i)
        if given_config is None:
            out.append(arg)
            i += 1
            continue
        flag, value, i = given_config
        path = Path(value)
        files = chain(path) if path.suffix in (".yaml", ".yml", ".json") and path.is_file() else [path]
        for base in files[:-1]:
            out += [flag, str(base)]
        out += [flag, value]
        given += [False] * (len(files) - 1) + [True]
    return out, given


def config_paths(argv: Sequence[str]) -> list[Path]:
    """The existing files `argv` gives as config files (`--config FILE`, `-c FILE`, `--config=FILE`)."""
    paths, i = [], 0
    while i < len(argv):
        given_config = _config_arg(argv, i)
        if given_config is None:
            i += 1
            continue
        _, value, i = given_config
        if Path(value).is_file():
            paths.append(Path(value))
    return paths


def _config_arg(argv: Sequence[str], i: int) -> tuple[str, str, int] | None:
    """(flag, value, index after them) when argv[i] gives a config file; None otherwise."""
    arg = argv[i]
    if arg in _CONFIG_FLAGS and i + 1 < len(argv):
        return arg, argv[i + 1], i + 2
    if isinstance(arg, str) and arg.startswith("--config="):
        return "--config", arg.split("=", 1)[1], i + 1
    return None


def drop_bases(config, given: list[bool]) -> None:
    """Remove `base` and the base files from a parsed namespace: what remains names the files the
    user gave (the run's experiment name is the first one's) and dumps as one complete config."""
    if KEY in config:
        del config[KEY]
    files = config.get("config")
    if files and len(files) == len(given) and not all(given):
        config["config"] = [f for f, mine in zip(files, given) if mine]


def _shown(path: Path) -> str:
    """`path` relative to the working directory when it lies below it."""
    try:
        return str(path.relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
