"""`RngState`: random-number-generator states travel in every checkpoint, so a resumed run draws
the same random numbers (curve t, dropout masks, Hutchinson noise, random pruning) as an
uninterrupted one. Lightning itself only seeds at start and does not save RNG states."""

from __future__ import annotations

import random

import numpy as np
import torch
from lightning.pytorch import Callback


class RngState(Callback):
    """Saves torch (CPU and CUDA), NumPy and Python RNG states; restores them on resume."""

    def state_dict(self) -> dict:
        kind, keys, pos, has_gauss, gauss = np.random.get_state()
        # Plain tensors and numbers only: checkpoints must load with torch.load(weights_only=True).
        state = {"torch": torch.get_rng_state(),
                 "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss),
                           float(gauss)],
                 "python": random.getstate()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        if not state_dict:
            return
        torch.set_rng_state(state_dict["torch"])
        kind, keys, pos, has_gauss, gauss = state_dict["numpy"]
        np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
        random.setstate(state_dict["python"])
        cuda = state_dict.get("cuda")
        # A run resumed on another device count keeps its fresh CUDA states rather than failing.
        if cuda is not None and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
