"""What a run prints: a model summary without empty columns or metric rows, no advertising tip,
and one line each for where the run folder is and what the run ended with."""

from __future__ import annotations

import logging
from pathlib import Path

from lightning.pytorch.callbacks import ModelSummary, RichProgressBar, TQDMProgressBar
from lightning.pytorch.utilities.model_summary.model_summary import get_human_readable_count

log = logging.getLogger("lightning.pytorch.callbacks.model_summary")  # printed where Lightning prints its own


_NOISE = ("litlogger", "Skipping setting a default `ModelSummary`")


class _DropTips(logging.Filter):
    """Lightning's tip to install another logging service, and its note that our model summary
    replaces its own: nothing a user can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = str(record.getMessage())
        return not any(noise in message for noise in _NOISE)


def quiet_lightning() -> None:
    """Drop the tip from every logger (and handler) Lightning's rank-zero messages pass through."""
    tips = _DropTips()
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero",
                 "lightning.pytorch", "lightning.fabric"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropTips) for f in logger.filters):
            logger.addFilter(tips)
        for handler in logger.handlers:
            if not any(isinstance(f, _DropTips) for f in handler.filters):
                handler.addFilter(tips)


class LayerSummary(ModelSummary):
    """The model summary as name | type | params | mode, for modules that hold parameters only
    (metric objects have none); the FLOPs column appears only when the module defines an
    `example_input_array` (Lightning counts FLOPs from it, else shows 0 everywhere)."""

    @staticmethod
    def summarize(summary_data, total_parameters: int, trainable_parameters: int, model_size: float,
                  total_training_modes: dict, total_flops: int, **summarize_kwargs) -> None:
        cols = dict(summary_data)
        if not total_flops:
            cols.pop("FLOPs", None)
        keep = [i for i, p in enumerate(cols.get("Params", [])) if str(p).strip() not in ("0", "")]
        cols = {name: [values[i] for i in keep] for name, values in cols.items()
                if name in ("Name", "Type", "Params", "Mode", "FLOPs")}
        widths = {name: max([len(name), *(len(str(v)) for v in values)]) for name, values in cols.items()}
        lines = [" | ".join(name.ljust(widths[name]) for name in cols)]
        lines.append("-" * len(lines[0]))
        for i in range(len(keep)):
            lines.append(" | ".join(str(cols[name][i]).ljust(widths[name]) for name in cols))
        flops = f", {get_human_readable_count(total_flops)} FLOPs" if total_flops else ""
        lines.append(f"{get_human_readable_count(trainable_parameters).strip()} trainable params, "
                     f"{get_human_readable_count(total_parameters - trainable_parameters).strip()} non-trainable, "
                     f"{model_size:.3f} MB{flops}")
        log.info("\n" + "\n".join(lines))


class _RunNumber:
    """`v_num` in the progress bar is the run folder's number (`version_3` -> 3). Lightning joins the
    versions of all loggers and shows the last 4 characters, which with W&B is a piece of its run id."""

    def get_metrics(self, trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        if "v_num" in items and trainer.loggers:
            items["v_num"] = str(trainer.loggers[0].version)  # the run folder's CSV logger goes first
        return items


class RunRichProgressBar(_RunNumber, RichProgressBar):
    """Lightning's rich progress bar, `v_num` = the run folder's number."""


class RunTQDMProgressBar(_RunNumber, TQDMProgressBar):
    """Lightning's tqdm progress bar, `v_num` = the run folder's number (where rich is not installed)."""


def progress_bar():
    """The progress bar Lightning would pick (rich when installed), showing the run folder's number."""
    try:
        import rich  # noqa: F401
    except ImportError:
        return RunTQDMProgressBar()
    return RunRichProgressBar()


def announce_folder(folder: Path, subcommand: str) -> None:
    print(f"run folder: {folder} ({subcommand})", flush=True)


def announce_result(folder: Path | None, summary: dict) -> None:
    """One line: the status and the headline metrics of `summary.json`."""
    if folder is None or not summary:
        return
    final = summary.get("final", {})
    keys = [k for k in final if k.startswith(("test/", "fge/", "lottery/")) and "time" not in k][:4] \
        or [k for k in final if k.startswith("val/")][:3]
    metrics = ", ".join(f"{k}={final[k]:.4g}" for k in keys)
    print(f"result: {summary.get('status', '?')}" + (f", {metrics}" if metrics else "")
          + f" ({folder / 'summary.json'})", flush=True)
