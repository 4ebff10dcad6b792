"""`parent_args`: forward a subclass's repeated constructor arguments to its parent."""

from __future__ import annotations

import inspect


def parent_args(parent: type, values: dict) -> dict:
    """The arguments of `parent.__init__` found in `values` (a subclass `__init__`'s `locals()`).

    Subclasses repeat their parent's arguments in their own signatures (LightningCLI and
    `save_hyperparameters` read them there); this forwards them without listing each one again.
    """
    names = inspect.signature(parent.__init__).parameters
    return {name: values[name] for name in names if name != "self" and name in values}
