"""Lightning's per-step host bookkeeping, trimmed where it costs time and changes nothing logged.

Small models are launch-bound (docs/speed.md), so host time per step is what a run pays for. Two
things here, both kept out of the modules' own code:

- `LeanHookNames`, a mixin: Lightning sets `_current_fx_name` (a hook name or None) on the module
  before and after every hook it calls, ~40 times per training step, and `nn.Module.__setattr__`
  spends ~1.5 us on each checking for parameters, modules and buffers, which a plain string never
  is. The mixin stores it directly.
- `logging_step(module)`: whether this step's values reach the loggers, so step metrics are only
  logged then (a step-level `self.log` costs host time even on steps Lightning does not write).
"""

from __future__ import annotations


class LeanHookNames:
    """Mixin for a LightningModule (list it before `LightningModule`): hook names are stored
    without `nn.Module.__setattr__`'s checks."""

    def __setattr__(self, name: str, value) -> None:
        if name == "_current_fx_name":
            object.__setattr__(self, name, value)
        else:
            super().__setattr__(name, value)


def logging_step(module) -> bool:
    """True on the steps whose values reach the loggers (every `log_every_n_steps`, and the last).

    Lightning has no public property for it; its logger connector's `should_update_logs` is the
    rule it applies itself, read here in one place (True when it cannot be read: log anyway).
    """
    try:
        return bool(module.trainer._logger_connector.should_update_logs)
    except (AttributeError, RuntimeError, NotImplementedError):
        return True
