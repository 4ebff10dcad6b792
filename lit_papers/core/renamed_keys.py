"""Model settings that moved into groups (settings.py), and the upgrade of configs that use the old keys.

`model.init_args.lr` is `model.init_args.optim.lr` since the optimizer settings are one group; the
DEQ's solver settings are `solver`, `backward` and `jacobian`, a curve's are `curve`. On the command
line an old key is rewritten to its new name with a notice (sweeps launched before the move keep
running); a config file with old keys is refused with the keys named and the command that rewrites
it, keeping its comments:

    python -m lit_papers upgrade-config old.yaml            # prints the upgraded file
    python -m lit_papers upgrade-config old.yaml --in-place

Keys whose old value was a name (`solver: anderson`, `backward: ift`, `curve: bezier`) and whose new
value is a group are renamed only when given a name, so a config already in the new form is left as is.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import yaml

from lit_papers.errors import UsageError

#: old model key -> its place in a group
RENAMED: dict[str, str] = {
    # lit_papers.core.optim.Optim
    "optimizer": "optim.name", "lr": "optim.lr", "momentum": "optim.momentum",
    "weight_decay": "optim.weight_decay", "nesterov": "optim.nesterov", "lr_schedule": "optim.schedule",
    "milestones": "optim.milestones", "gamma": "optim.gamma",
    # lit_papers.deq.settings: Solver, Backward, JacobianPenalty
    "solver": "solver.name", "max_iter": "solver.max_iter", "tol": "solver.tol", "stop_mode": "solver.stop_mode",
    "solver_kwargs": "solver.kwargs", "eval_max_iter": "solver.eval_max_iter",
    "backward": "backward.mode", "backward_solver": "backward.solver", "backward_max_iter": "backward.max_iter",
    "backward_tol": "backward.tol", "backward_kwargs": "backward.kwargs", "phantom_steps": "backward.phantom_steps",
    "phantom_tau": "backward.phantom_tau", "unroll_steps": "backward.unroll_steps",
    "jac_weight": "jacobian.weight", "jac_freq": "jacobian.freq", "jac_probes": "jacobian.probes",
    # lit_papers.mode_connectivity.settings.Curve
    "curve": "curve.kind", "num_bends": "curve.num_bends", "endpoints": "curve.endpoints",
    "endpoint_epochs": "curve.endpoint_epochs", "endpoint_seeds": "curve.endpoint_seeds",
    "endpoint_lr": "curve.endpoint_lr",
    # lit_papers.neural_ode.settings.ODESolve
    "method": "ode.method", "rtol": "ode.rtol", "atol": "ode.atol", "eval_rtol": "ode.eval_rtol",
    "eval_atol": "ode.eval_atol", "step_size": "ode.step_size", "adjoint": "ode.adjoint",
    "max_num_steps": "ode.max_num_steps",
}

#: old keys that name something (a str) where the new key of the same name is a group
NAME_KEYS = frozenset({"solver", "backward", "curve"})

_PREFIX = re.compile(r"^--model\.(init_args\.)?(?P<key>\w+)(?P<rest>=.*)?$")


def renamed(key: str, value=None, value_known: bool = False) -> str | None:
    """The new dotted name of model key `key` (None when it did not move). For a key in NAME_KEYS
    only a name (a str value) is an old use."""
    new = RENAMED.get(key)
    if new is None or (key in NAME_KEYS and value_known and not isinstance(value, str)):
        return None
    return new


# -- command line -------------------------------------------------------------------------------
def rewrite_flags(argv: Sequence[str], notice=print) -> list[str]:
    """`argv` with every `--model[.init_args].<old key>` renamed; one notice per renamed flag."""
    out = list(argv)
    for i, arg in enumerate(out):
        match = _PREFIX.match(arg) if isinstance(arg, str) else None
        if match is None:
            continue
        key, rest = match["key"], match["rest"]
        value = rest[1:] if rest else (out[i + 1] if i + 1 < len(out) else None)
        if key in NAME_KEYS and (value is None or value.lstrip().startswith(("{", "--"))):
            continue  # a group given whole: the new form
        new = renamed(key)
        if new is None:
            continue
        flag = f"--model.{match[1] or ''}{new}"
        out[i] = flag + (rest or "")
        notice(f"note: {arg.split('=', 1)[0]} is now {flag} (model settings are grouped: "
               f"`python -m lit_papers fit --help` lists them)", file=sys.stderr)
    return out


# -- config files ---------------------------------------------------------------------------------
def _model_args(model: Mapping) -> tuple[Mapping, str]:
    """(the module's arguments, their dotted prefix) of a config's `model` block."""
    if isinstance(model.get("init_args"), Mapping):
        return model["init_args"], "model.init_args."
    return model, "model."


def _moved(args: Mapping) -> list[tuple[str, str]]:
    """(old key, new dotted key) of the moved keys among a module's arguments."""
    moved = [(str(key), renamed(str(key), value, value_known=True)) for key, value in args.items()]
    return [(key, new) for key, new in moved if new is not None]


def old_keys(config: Mapping) -> list[tuple[str, str]]:
    """(old dotted key, new dotted key) for every moved key in a parsed config file's `model` block."""
    model = config.get("model") if isinstance(config, Mapping) else None
    if not isinstance(model, Mapping):
        return []
    args, prefix = _model_args(model)
    return [(prefix + key, prefix + new) for key, new in _moved(args)]


def upgrade_mapping(config: Mapping) -> dict:
    """A parsed config with the moved keys of its `model` block put into their groups (a copy). A
    setting given both ways (`lr` and `optim.lr`) is a usage error naming both."""
    config = dict(config)
    model = config.get("model")
    if not isinstance(model, Mapping):
        return config
    model = config["model"] = dict(model)
    args, prefix = _model_args(model)
    holder = dict(args)
    if args is model:
        config["model"] = holder
    else:
        model["init_args"] = holder
    moved = _moved(holder)
    groups = {group: dict(holder[group]) for group in {new.split(".")[0] for _, new in moved}
              if isinstance(holder.get(group), Mapping)}  # groups the file also gives in the new form
    for key, new in moved:  # a name moving into its group (solver: broyden) included
        group, field = new.split(".", 1)
        if field in groups.get(group, {}):
            raise UsageError(f"{prefix}{key} and {prefix}{new} both set one setting: keep {prefix}{new}")
        groups.setdefault(group, {})[field] = holder.pop(key)
    holder.update(groups)
    return config


def upgrade_hparams(hparams: Mapping) -> dict:
    """A module's saved hyper-parameters (a checkpoint's `hyper_parameters`) with the moved keys put
    into their groups: what the module takes now."""
    return upgrade_mapping({"model": {"init_args": dict(hparams)}})["model"]["init_args"]


def check_files(paths: Iterable[Path]) -> None:
    """Refuse config files that use moved keys, naming each key and the command that upgrades the file."""
    problems = []
    for path in paths:
        try:
            content = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError):
            continue  # not ours to report: jsonargparse names a missing file or a syntax error
        moved = old_keys(content) if isinstance(content, Mapping) else []
        if moved:
            pairs = ", ".join(f"{old} -> {new}" for old, new in moved)
            problems.append(f"{path}: {pairs}")
    if problems:
        files = " ".join(p.split(":", 1)[0] for p in problems)
        raise UsageError("config settings moved into groups: " + "; ".join(problems)
                         + f". Upgrade the file (comments are kept): python -m lit_papers upgrade-config "
                           f"{files} --in-place")


_KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_]\w*):(?P<rest>.*)$")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _blank(line: str) -> bool:
    return not line.strip() or line.lstrip().startswith("#")


def upgrade_text(text: str) -> str:
    """`text` (a config file) with the moved keys of its `model` block rewritten into their groups,
    in the place of the first of them; comments, order and the other keys stay as they were."""
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError:
        return text  # not ours to report: jsonargparse names the syntax error
    if not isinstance(parsed, Mapping) or not old_keys(parsed):
        return text
    upgrade_mapping(parsed)  # a setting given both ways is refused here, naming both
    new = _upgrade_lines(text)
    left = old_keys(yaml.safe_load(new))
    if left:
        raise UsageError("cannot rewrite these keys in place (a flow-style `{...}` or quoted model block): "
                         + ", ".join(f"{a} -> {b}" for a, b in left) + "; move them by hand")
    return new


def _upgrade_lines(text: str) -> str:
    lines = text.splitlines(keepends=True)
    start, end = _block(lines, 0, len(lines), "model", 0)
    if start is None:
        return text
    child = _child_indent(lines, start + 1, end)
    if child is None:
        return text
    inner_start, inner_end = _block(lines, start + 1, end, "init_args", child)
    if inner_start is not None:
        indent = _child_indent(lines, inner_start + 1, inner_end)
        if indent is None:
            return text
        lo, hi = inner_start + 1, inner_end
    else:
        indent, lo, hi = child, start + 1, end
    items = _items(lines, lo, hi, indent)
    moves: dict[str, list[tuple[int, int, str]]] = {}  # group -> (first line, end line, field)
    for first, key_line, last, key, value in items:
        # a block under a key is a mapping or a list, never a name: `solver:` + fields is a group
        new = renamed(key, {} if value is _BLOCK else value, value_known=True)
        if new is not None:
            group, field = new.split(".", 1)
            moves.setdefault(group, []).append((first, key_line, last, field))
    if not moves:
        return text
    pad = " " * indent
    taken: set[int] = set()
    inserts: dict[int, list[str]] = {}
    for group, members in moves.items():
        existing = [it for it in items if it[3] == group and all(it[1] != m[1] for m in members)]
        if existing and existing[0][4] is not _BLOCK:
            raise UsageError(f"model.{group} is written inline and its old keys "
                             f"({', '.join(m[3] for m in members)}) apart: merge them by hand")
        newline = "\r\n" if lines[members[0][1]].endswith("\r\n") else "\n"
        block = [] if existing else [f"{pad}{group}:{newline}"]
        for first, key_line, last, field in members:
            for n in range(first, last):
                taken.add(n)
                line = lines[n]
                if n == key_line:
                    m = _KEY_LINE.match(line.rstrip("\n"))
                    line = f"{m['indent']}{field}:{m['rest']}" + ("\n" if line.endswith("\n") else "")
                block.append("  " + line if line.strip() else line)
        at = existing[0][2] if existing else members[0][0]
        inserts.setdefault(at, []).extend(block)
    out = []
    for n, line in enumerate(lines):
        out.extend(inserts.get(n, []))
        if n not in taken:
            out.append(line)
    out.extend(inserts.get(len(lines), []))
    return "".join(out)


_BLOCK = object()  # a key whose value follows on the next lines


def _block(lines, lo, hi, key, indent):
    """(line of `key:` at `indent` within [lo, hi), end of its block) or (None, None)."""
    for n in range(lo, hi):
        m = _KEY_LINE.match(lines[n].rstrip("\n"))
        if m and len(m["indent"]) == indent and m["key"] == key:
            end = n + 1
            while end < hi and (_blank(lines[end]) or _indent(lines[end]) > indent):
                end += 1
            while end > n + 1 and not lines[end - 1].strip():
                end -= 1
            return n, end
    return None, None


def _child_indent(lines, lo, hi):
    for n in range(lo, hi):
        if not _blank(lines[n]):
            return _indent(lines[n])
    return None


def _items(lines, lo, hi, indent):
    """(first line incl. its leading comments, key line, end, key, value) of each key at `indent`."""
    items, comments_from = [], None
    n = lo
    while n < hi:
        line = lines[n]
        if _blank(line):
            if line.strip() and _indent(line) == indent and comments_from is None:
                comments_from = n
            elif not line.strip():
                comments_from = None
            n += 1
            continue
        m = _KEY_LINE.match(line.rstrip("\n"))
        if m is None or _indent(line) != indent:
            comments_from = None
            n += 1
            continue
        end = n + 1
        while end < hi and (not lines[end].strip() or _indent(lines[end]) > indent
                            or lines[end].lstrip().startswith("- ") and _indent(lines[end]) == indent):
            end += 1
        while end > n + 1 and not lines[end - 1].strip():
            end -= 1
        rest = m["rest"].split(" #", 1)[0].strip()
        try:
            value = _BLOCK if not rest else yaml.safe_load(rest)
        except yaml.YAMLError:
            value = rest
        items.append((n if comments_from is None else comments_from, n, end, m["key"], value))
        comments_from = None
        n = end
    return items


def main(argv: Sequence[str] | None = None) -> None:
    """`python -m lit_papers upgrade-config FILE... [--in-place]`."""
    parser = argparse.ArgumentParser(prog="python -m lit_papers upgrade-config",
                                     description="Rewrite config files whose model settings use the keys "
                                                 "from before the settings groups (model.lr -> model.optim.lr).")
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--in-place", action="store_true", help="rewrite the files instead of printing them")
    args = parser.parse_args(argv)
    for path in args.files:
        if not path.is_file():
            parser.exit(2, f"error: {path} is not a file\n")
        text = path.read_text()
        try:
            new = upgrade_text(text)
        except UsageError as err:
            parser.exit(2, f"error: {path}: {err}\n")
        if args.in_place:
            if new != text:
                path.write_text(new)
                print(f"upgraded {path}", file=sys.stderr)
        else:
            sys.stdout.write(new)
