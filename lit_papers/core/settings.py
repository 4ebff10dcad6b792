"""Settings groups: a dataclass per block of related arguments (`optim`, a DEQ's `solver`, a curve's
`curve`), so a module's signature names the block once and the CLI shows it as one block:

    model:
      class_path: CurveModule
      init_args:
        optim: {name: sgd, lr: 0.05, momentum: 0.9, schedule: swa_linear}

`--model.optim.lr 0.1` sets one field; fields left out keep the module's defaults. A module stores
each group in its hyper-parameters as a plain dict (`keep_groups`), so checkpoints load with
`weights_only=True`, and hparams.yaml and the W&B config list the fields. `Group.of(value)` turns
either form (instance or dict, e.g. from `load_from_checkpoint`) back into the dataclass.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

G = TypeVar("G", bound="Group")


@dataclasses.dataclass(frozen=True)
class Group:
    """Base of the settings dataclasses (frozen, and a dataclass itself, so jsonargparse reads a
    subclass as a group of fields, not as a class to choose): `of` and `as_dict`."""

    @classmethod
    def of(cls: type[G], value: Any) -> G:
        """`value` as this group: the instance itself, a dict of some of its fields, or None (defaults)."""
        if isinstance(value, cls):
            return value
        if value is None:
            return cls()
        if isinstance(value, Mapping):
            names = {f.name for f in dataclasses.fields(cls)}
            unknown = sorted(set(value) - names)
            if unknown:
                raise ValueError(f"{cls.__name__} has no setting {', '.join(unknown)}; "
                                 f"its settings: {', '.join(sorted(names))}")
            return cls(**value)
        raise TypeError(f"expected {cls.__name__} settings (a dict of {cls.__name__}'s fields), got {value!r}")

    def as_dict(self) -> dict:
        """The fields as plain values (tuples as lists), what hparams and config files hold."""
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}


def keep_groups(module, **groups: type[Group]) -> None:
    """Replace each named group in `module.hparams` by its plain dict (call after save_hyperparameters)."""
    for name, cls in groups.items():
        module.hparams[name] = cls.of(module.hparams.get(name)).as_dict()


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value
