"""Checks a run makes before its run folder exists: every setting that can be judged from the
module, the data module and the trainer, so that a refused command leaves the runs tree as it was.

A module or data module takes part by defining public methods (both optional):
- `check_trainer(trainer)`: raise a ValueError when the trainer's settings (budget, validation
  cadence, ...) do not fit the module; the module calls it again in `setup` for non-CLI use.
- `check_data()`: load or locate the data (a missing dataset, a split that leaves nothing).
"""

from __future__ import annotations


import torch

from lit_papers.errors import UsageError


def check_network(hparams, datamodule) -> None:
    """Build the registered network `hparams.arch` once (without consuming the run's RNG), so a
    bad `arch_kwargs` is refused now, with the model's options named, not when `setup` builds it."""
    arch = hparams.get("arch") if hasattr(hparams, "get") else None
    if not isinstance(arch, str):
        return
    num_classes = hparams.get("num_classes") or getattr(datamodule, "num_classes", None)
    input_shape = hparams.get("input_shape") or getattr(datamodule, "input_shape", None)
    if num_classes is None or input_shape is None:
        return
    from lit_papers.models import build_model, model_options

    kwargs = dict(hparams.get("arch_kwargs") or {})
    try:
        with torch.random.fork_rng(devices=[]):
            build_model(arch, tuple(input_shape), int(num_classes), **kwargs)
    except (TypeError, ValueError) as err:
        raise UsageError(f"model.arch_kwargs={kwargs} do not build {arch!r}: {err}. "
                         f"{arch} takes: {model_options(arch)}") from None


def check(model, datamodule, trainer, subcommand: str) -> None:
    """Every check that needs no run folder; raises the module's own error (a usage error)."""
    if datamodule is not None and callable(getattr(datamodule, "check_data", None)):
        datamodule.check_data()
    check_network(getattr(model, "hparams", {}), datamodule)
    if subcommand == "fit" and callable(getattr(model, "check_trainer", None)):
        model.check_trainer(trainer)
