"""Where benchmark results are written and how the device is named in their file names."""

from __future__ import annotations

from pathlib import Path

import torch

RESULTS = Path(__file__).resolve().parent / "results"


def device_name(device: torch.device) -> str:
    """`cpu`, or the CUDA device's name in lower case without the vendor (e.g. `h200`)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device).lower().replace("nvidia ", "").replace(" ", "-")
    return "cpu"
