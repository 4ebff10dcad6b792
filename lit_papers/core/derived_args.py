"""Model arguments the datamodule determines, filled in right after parsing.

`num_classes` and `input_shape` follow from the dataset. A datamodule class that can say them from
its own arguments, without loading data, defines ``model_arguments(**init_args) -> dict``; the CLI
writes those values into the model's arguments that are null, so `--print_config`, config.yaml and
the W&B run config show the values the run uses (and a saved config.yaml reruns the same run).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence

_PRINT = "--print_config"
_FLAGS = {"skip_default": "skip_default", "skip_null": "skip_unset", "skip_unset": "skip_unset",
          "comments": "with_comments"}


def print_config_request(argv: Sequence[str]) -> tuple[str, dict] | None:
    """(the argument, dump keywords) of a `--print_config[=flags]` in argv; None when absent or
    its flags are not ones this knows (jsonargparse then answers, or names the bad flag)."""
    for arg in argv:
        if not isinstance(arg, str) or not (arg == _PRINT or arg.startswith(_PRINT + "=")):
            continue
        flags = [f for f in arg[len(_PRINT) + 1:].split(",") if f]
        if any(f not in _FLAGS for f in flags):
            return None
        return arg, {_FLAGS[f]: True for f in flags}
    return None


def _class(path: str | None):
    if not path or "." not in path:
        return None
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name, None)
    except ImportError:
        return None


def fill_data_derived(config) -> None:
    """Set the null model arguments that the datamodule of `config` (a parsed namespace) determines."""
    model, data = config.get("model"), config.get("data")
    if model is None or data is None or not hasattr(model, "init_args") or not hasattr(data, "init_args"):
        return
    describe = getattr(_class(data.get("class_path")), "model_arguments", None)
    if describe is None:
        return
    for key, value in describe(**dict(data.init_args)).items():
        if key in model.init_args and model.init_args[key] is None:
            model.init_args[key] = value
