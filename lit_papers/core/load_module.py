"""Reading modules back from checkpoints: their hyper-parameters (`checkpoint_hparams`), and the
module itself (`load_module`), also from a checkpoint written before the settings groups."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from .renamed_keys import old_keys, upgrade_hparams


def checkpoint_hparams(path: str | Path) -> dict:
    """A checkpoint's `hyper_parameters`, read without loading its weights (mmap); {} when the file
    cannot be read that way (its loader reports why)."""
    try:
        return dict(torch.load(path, map_location="cpu", weights_only=True, mmap=True).get("hyper_parameters")
                    or {})
    except Exception:  # noqa: BLE001 - an unreadable file is reported where it is loaded
        return {}


def load_module(cls, path: str | Path, **kwargs):
    """`cls.load_from_checkpoint(path, **kwargs)`. A checkpoint whose hyper-parameters use the flat keys
    from before the settings groups (`lr`, `method`, `max_iter`, ...) is read with them moved into the
    groups (`optim.lr`, ...): `load_from_checkpoint` alone would drop them and build the module with
    its defaults. Reads the whole file (`weights_only=False`): pass only checkpoints you trust."""
    kwargs.setdefault("weights_only", False)
    hparams = checkpoint_hparams(path)
    if not old_keys({"model": {"init_args": hparams}}):
        return cls.load_from_checkpoint(path, **kwargs)
    checkpoint = torch.load(path, map_location="cpu", weights_only=kwargs["weights_only"])
    checkpoint["hyper_parameters"] = upgrade_hparams(hparams)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    buffer.seek(0)
    return cls.load_from_checkpoint(buffer, **kwargs)
