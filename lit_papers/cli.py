"""The `python -m lit_papers` command line: LightningCLI plus run folders, W&B and clear errors."""

from __future__ import annotations

import errno
import os
import re
import sys
import warnings
from pathlib import Path
from typing import Literal, Optional, Union

from jsonargparse import Namespace
from jsonargparse.typing import PositiveInt
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, ModelSummary, ProgressBar
from lightning.pytorch.cli import ArgsType, LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, Logger, WandbLogger

import lit_papers.modules  # noqa: F401  (registers every module and datamodule for short names)
from lit_papers.core import config_bases, preflight, renamed_keys, run_folder
from lit_papers.errors import RunFailed, UsageError
from lit_papers.core.derived_args import fill_data_derived, print_config_request
from lit_papers.core.console import LayerSummary, announce_folder, announce_result, progress_bar, quiet_lightning
from lit_papers.core.guards import NonFiniteGuard
from lit_papers.core.last_checkpoint import LastCheckpoint
from lit_papers.core.load_module import checkpoint_hparams
from lit_papers.core.predictions import PredictionsFile
from lit_papers.core.preemption import STOP_SIGNALS, Preemption
from lit_papers.core.rng_state import RngState
from lit_papers.core.summary import RunArtifacts
from lit_papers.core.wandb_files import UploadConfig

EXIT_USAGE = 2

# Lightning 2.6 on torch 2.14 warns about a torch pytree deprecation on every step; it is not ours to fix.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


class _Parser(LightningArgumentParser):
    """LightningCLI's parser whose usage errors print the error and where the help is, without the
    60-line list of every option that buries the one line that matters."""

    def print_usage(self, file=None) -> None:
        pass  # argparse calls it only on a usage error; `--help` prints the full help as before


class LitPapersCLI(LightningCLI):
    """LightningCLI whose runs each get `runs/<experiment>/<version>/` with metrics, checkpoints,
    figures, config and summary; `--ckpt_path last|best` resolves inside the experiment's runs.
    `validate`/`test`/`predict` of a run's checkpoint write into `<run>/eval/<subcommand>-<n>/`."""

    run_dir: Optional[Path] = None
    exit_code: int = 0  # 128 + signal number when SIGTERM/SIGINT stopped the run

    def add_arguments_to_parser(self, parser) -> None:
        parser.add_argument("--experiment", type=Optional[str], default=None,
                            help="Run folder name under run_root (default: the first config file's name).")
        parser.add_argument("--run_root", type=str, default="runs", help="Where run folders are created.")
        parser.add_argument("--run_version", type=Optional[str], default=None,
                            help="Run folder version (default: next free version_N).")
        parser.add_argument("--wandb_project", type=str, default="lit-papers", help="W&B project.")
        parser.add_argument("--wandb_entity", type=Optional[str], default=None, help="W&B entity.")
        parser.add_argument("--wandb_group", type=Optional[str], default=None,
                            help="W&B run group (default: the experiment name).")
        parser.add_argument("--wandb_tags", type=Optional[list[str]], default=None, help="W&B run tags.")
        parser.add_argument("--wandb_notes", type=Optional[str], default=None, help="W&B run notes.")
        parser.add_argument("--wandb_log_model", type=Union[bool, Literal["all"]], default=False,
                            help="Upload checkpoints as W&B artifacts: true (at the end), all (every save).")
        parser.add_argument("--wandb_mode", type=Optional[str], default=None,
                            help="online, offline or disabled (default: WANDB_MODE, else online with "
                                 "credentials, offline without).")
        parser.add_argument("--test_after_fit", type=Optional[bool], default=None,
                            help="Test the best checkpoint after fit (default: the module's choice).")
        parser.add_argument("--checkpoint_every_n_epochs", type=PositiveInt, default=1,
                            help="Refresh checkpoints/last.ckpt every N epochs (and at the end of fit).")
        parser.add_argument(f"--{config_bases.KEY}", type=Optional[Union[str, list[str]]], default=None,
                            help="In a config file only: the config file(s) it is a delta of, relative to it, "
                                 "applied before it (lit_papers/core/config_bases.py).")

    # -- parsing: values the datamodule determines ----------------------------------------------
    def parse_arguments(self, parser, args) -> None:
        """Parse, then fill the model arguments the datamodule determines (`num_classes`,
        `input_shape`) where they are null, so `--print_config`, config.yaml and the W&B config
        hold the values the run uses. `--print_config` is therefore answered here, after filling."""
        argv = sys.argv[1:] if args is None else args
        if isinstance(argv, (dict, Namespace)):
            printing, given = None, []
            super().parse_arguments(parser, args)
        else:
            # A config file's `base:` files go before it as --config (config_bases.py).
            argv, given = config_bases.expand(list(argv))
            argv = renamed_keys.rewrite_flags(argv)  # keys from before the settings groups
            renamed_keys.check_files(config_bases.config_paths(argv))
            printing = print_config_request(argv)
            if printing is not None:
                argv = [a for a in argv if a != printing[0]]
            if args is not None and printing is None:
                super().parse_arguments(parser, argv)
            else:
                saved = sys.argv
                sys.argv = [saved[0], *argv]
                try:
                    super().parse_arguments(parser, None)
                finally:
                    sys.argv = saved
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else self.config
        config_bases.drop_bases(config, given)
        fill_data_derived(config)
        if printing is not None:
            sys.stdout.write(self._parser(subcommand).dump(config, **printing[1]))
            sys.exit(0)

    # -- run folder + loggers + default callbacks ----------------------------------------------
    def _experiment_name(self, cfg) -> str:
        if cfg.get("experiment"):
            return str(cfg["experiment"])
        configs = cfg.get("config") or []
        if configs:
            first = configs[0]
            path = getattr(first, "relative", None) or getattr(first, "absolute", None) or str(first)
            return Path(str(path)).stem
        return type(self.model).__name__.removesuffix("Module").lower() or "run"

    def _parse_ckpt_path(self) -> None:
        # Lightning reads the hyperparameters of a --ckpt_path file into the model config here,
        # before anything else: a missing/corrupt file or another module's checkpoint fails here.
        sub = self.config.get("subcommand")
        ckpt = self.config[sub].get("ckpt_path") if sub else None
        if not ckpt or ckpt in ("last", "best"):
            return super()._parse_ckpt_path()
        run_folder.check_checkpoint(Path(ckpt))
        model = self.config[sub].get("model")
        run_folder.check_checkpoint_module(Path(ckpt), getattr(model, "class_path", None))
        try:
            if not self._parse_old_ckpt_hparams(sub, Path(ckpt)):
                super()._parse_ckpt_path()
        except SystemExit:
            raise UsageError(f"--ckpt_path {ckpt}: its hyperparameters do not fit the --model of this "
                             f"command; it was written by another module or config. Use the config.yaml of "
                             f"the run that wrote it (--config <run folder>/config.yaml).") from None

    def _parse_old_ckpt_hparams(self, sub: str, ckpt: Path) -> bool:
        """What Lightning's `_parse_ckpt_path` does, for a checkpoint written before the settings groups:
        its flat keys (`lr`, `max_iter`, ...) are read into the groups (renamed_keys.py). False when the
        checkpoint uses the groups already (Lightning then reads it)."""
        hparams = checkpoint_hparams(ckpt)
        hparams.pop("_instantiator", None)
        if not renamed_keys.old_keys({"model": {"init_args": hparams}}):
            return False
        class_path = hparams.pop("_class_path", None)
        hparams = renamed_keys.upgrade_hparams(hparams)
        model = {"class_path": class_path, "dict_kwargs": hparams} if class_path else hparams
        self.config = self.parser.parse_object({sub: {"model": model}}, self.config)
        return True

    def _resolve_ckpt(self, cfg, root: Path, experiment: str) -> Optional[Path]:
        ckpt = cfg.get("ckpt_path")
        if ckpt in ("last", "best"):
            path = run_folder.check_checkpoint(run_folder.latest_checkpoint(root, experiment, ckpt))
            run_folder.check_checkpoint_module(path, f"{type(self.model).__module__}.{type(self.model).__name__}")
        elif ckpt:
            path = run_folder.check_checkpoint(Path(ckpt))
        else:
            return None
        cfg["ckpt_path"] = str(path)
        return path

    def _instantiate_trainer(self, config, callbacks):
        cfg = self.config_init[self.subcommand]
        if config.get("fast_dev_run") or config.get("logger") is False:
            trainer = super()._instantiate_trainer(config, callbacks)
            preflight.check(self.model, self.datamodule, trainer, self.subcommand)
            return trainer
        root = Path(cfg.get("run_root") or "runs")
        run_folder.check_writable(root)
        experiment = self._experiment_name(cfg)
        resume = self._resolve_ckpt(cfg, root, experiment)
        # Build the trainer on the folder this run will get and make every check before the folder
        # exists: a refused command leaves the runs tree as it was.
        planned = run_folder.plan(root, experiment, cfg.get("run_version"), resume, self.subcommand,
                                  slurm=run_folder.slurm_managed(config.get("plugins")))
        trainer, loggers = self._trainer_for(planned, experiment, resume, dict(config), callbacks)
        preflight.check(self.model, self.datamodule, trainer, self.subcommand)
        folder = run_folder.claim(planned)
        if folder != planned:  # a parallel run took the planned version meanwhile
            trainer, loggers = self._trainer_for(folder, experiment, resume, dict(config), callbacks)
        run_folder.record_wandb_id(folder, loggers)
        self.run_dir = folder
        if trainer.is_global_zero:
            announce_folder(folder, self.subcommand)
        return trainer

    def _trainer_for(self, folder: Path, experiment: str, resume: Optional[Path], config: dict, callbacks):
        """The Trainer writing into `folder` (which need not exist yet), and our loggers."""
        cfg = self.config_init[self.subcommand]
        user = config.get("logger")
        user = [] if user in (None, True) else (list(user) if isinstance(user, (list, tuple)) else [user])
        user_wandb = next((lg for lg in user if isinstance(lg, WandbLogger)), None)
        ours = run_folder.make_loggers(folder, experiment, cfg["wandb_project"], cfg.get("wandb_entity"),
                                       cfg.get("wandb_mode"), group=cfg.get("wandb_group"),
                                       tags=cfg.get("wandb_tags"), notes=cfg.get("wandb_notes"),
                                       log_model=cfg.get("wandb_log_model", False), config=self._resolved_config(),
                                       user=user_wandb)
        # The CSV logger goes first: Lightning takes trainer.log_dir (config.yaml) from it.
        # A user's WandbLogger is replaced by ours carrying its settings: one W&B run, not two sharing an id.
        config["logger"] = [ours[0], *[lg for lg in user if isinstance(lg, Logger)
                                       and not isinstance(lg, (CSVLogger, WandbLogger))], *ours[1:]]
        if config.get("default_root_dir") in (None, "", "."):
            config["default_root_dir"] = str(folder)
        config["callbacks"] = list(config.get("callbacks") or [])
        existing = config["callbacks"]
        evaluating = self.subcommand in run_folder.EVALUATIONS
        extra = [RunArtifacts(seed=cfg.get("seed_everything"), experiment=experiment,
                              checkpoint=str(resume) if evaluating and resume else None),
                 RngState(), Preemption(slurm=run_folder.slurm_managed(config.get("plugins"))),
                 NonFiniteGuard(), UploadConfig(folder)]
        if self.subcommand == "predict":
            extra.append(PredictionsFile(folder))
        everything = existing + list(callbacks)
        if config.get("enable_model_summary") is not False and not any(isinstance(cb, ModelSummary)
                                                                         for cb in everything):
            extra.append(LayerSummary(max_depth=1))
        if config.get("enable_progress_bar") is not False and not any(isinstance(cb, ProgressBar)
                                                                        for cb in everything):
            extra.append(progress_bar())
        if self.subcommand == "fit" and not any(isinstance(cb, LearningRateMonitor) for cb in everything):
            # `lr-<Optimizer>` every logging step: FGE cycles, IMP's restarts, schedules all show
            extra.append(LearningRateMonitor(logging_interval="step"))
        if not any(isinstance(cb, ModelCheckpoint) for cb in existing + list(callbacks)):
            monitor, mode = getattr(self.model, "checkpoint_monitor", None) or (None, "min")
            ckpts = folder / "checkpoints"
            if monitor is not None:  # modules without a selection metric only keep last.ckpt
                extra.append(ModelCheckpoint(dirpath=ckpts, filename="best-{epoch}-{step}", monitor=monitor,
                                             mode=mode, save_top_k=1, auto_insert_metric_name=False))
            # A second checkpoint for `last.ckpt`: Lightning's save_last only refreshes it when the best
            # checkpoint changes, which would resume from a stale epoch.
            extra.append(LastCheckpoint(ckpts, every_n_epochs=cfg.get("checkpoint_every_n_epochs", 1)))
        return super()._instantiate_trainer(config, list(callbacks) + extra), ours

    def _resolved_config(self) -> dict:
        """The whole resolved config of this command, nested as in config.yaml (for the W&B run)."""
        import yaml

        parser = self._parser(self.subcommand)
        text = parser.dump(self.config[self.subcommand], skip_none=False, skip_validation=True)
        config = yaml.safe_load(text) or {}
        config.pop("config", None)
        files = [str(getattr(c, "relative", c)) for c in (self.config[self.subcommand].get("config") or [])]
        return {"subcommand": self.subcommand, "config_files": files, **config}

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except (ValueError, TypeError) as err:
            # Once a loop has started (a training, validation, test or predict batch), a ValueError is a
            # failure of the run, not of the command line: traceback, exit 1. Before (setup, optimizers)
            # it is a setting the module refuses: a usage error.
            running = any(getattr(cb, "running", False) for cb in self.trainer.callbacks)
            if running and not isinstance(err, UsageError):
                err.during_run = True
            raise

    def after_fit(self) -> None:
        cfg = self.config_init[self.subcommand]
        wanted = cfg.get("test_after_fit")
        wanted = getattr(self.model, "test_after_fit", True) if wanted is None else wanted
        preempted = any(getattr(cb, "preempted", False) for cb in self.trainer.callbacks)
        stop = next((cb.stopped_by for cb in self.trainer.callbacks if getattr(cb, "stopped_by", None)), None)
        if stop in STOP_SIGNALS:  # SIGTERM / SIGINT: saved and stopped; exit 128 + signal number
            self.exit_code = 128 + stop
        if not wanted or self.trainer.interrupted or preempted or self.trainer.fast_dev_run:
            return
        dm = self.datamodule
        has_test = dm is not None and type(dm).test_dataloader is not LightningDataModule.test_dataloader
        if not has_test and type(self.model).test_dataloader is LightningModule.test_dataloader:
            return
        ckpt = self.trainer.checkpoint_callback
        best = getattr(ckpt, "best_model_path", "") if ckpt is not None else ""
        self.trainer.test(self.model, datamodule=dm, ckpt_path=best or None, weights_only=False)


def _cli(args: ArgsType = None) -> LitPapersCLI:
    quiet_lightning()
    return LitPapersCLI(
        model_class=None,
        datamodule_class=None,
        save_config_callback=SaveConfigCallback,
        save_config_kwargs={"overwrite": True},  # a requeue/resume rewrites it instead of aborting
        auto_configure_optimizers=False,  # optimisers are module arguments (IMP rounds and FGE need them)
        parser_kwargs={"default_env": False, "prog": "python -m lit_papers"},
        parser_class=_Parser,
        args=args,
    )


_UNION_ERROR = re.compile(r"Errors:\s*-\s*(?P<inner>.*?)\s*- Expected a <class 'NoneType'>", re.S)


def _explain(err: BaseException) -> str:
    """One paragraph: jsonargparse wraps our messages in a Union report; keep only ours."""
    msg = str(err).strip() or type(err).__name__
    inner = _UNION_ERROR.search(msg)
    if inner:
        msg = inner.group("inner")
    return " ".join(msg.split())


def main(args: ArgsType = None) -> LitPapersCLI | None:
    """Entry point of `python -m lit_papers`. Usage errors exit with code 2 and a one-paragraph message."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] == "sweep":
        from lit_papers.sweeps.runner import main as sweep_main

        return sweep_main(argv[1:])
    if argv and argv[0] == "upgrade-config":
        return renamed_keys.main(argv[1:])
    try:
        cli = _cli(None if args is None else argv)
    except UsageError as err:
        run_folder.discard_claimed()
        _fail(f"error: {_explain(err)}", EXIT_USAGE)
    except RunFailed as err:
        _fail(f"run failed: {_explain(err)}", 1)
    except OSError as err:
        if err.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        _fail(f"run failed: no space left on device ({err.filename or err.strerror}). Free space or point "
              f"--run_root at a larger disk, then resume with --ckpt_path last: checkpoints are written "
              f"atomically, so the last complete one is intact.", 1)
    except MisconfigurationException as err:  # Lightning's word for settings that contradict each other
        run_folder.discard_claimed()
        _fail(f"error: {_explain(err)}", EXIT_USAGE)
    except (ValueError, TypeError) as err:
        if getattr(err, "during_run", False) or os.environ.get("JSONARGPARSE_DEBUG") \
                or os.environ.get("LIT_PAPERS_DEBUG"):
            raise  # a failure inside training: its traceback, exit 1, status in summary.json
        # Raised while building the model/data/trainer from the config: the user's values are wrong.
        run_folder.discard_claimed()
        _fail(f"error: {_explain(err)} (set LIT_PAPERS_DEBUG=1 for the traceback)", EXIT_USAGE)
    if cli is not None and cli.run_dir is not None and int(os.environ.get("LOCAL_RANK", "0")) == 0:
        announce_result(cli.run_dir, _read_json(cli.run_dir / "summary.json"))
    if cli is not None and cli.exit_code:
        print(f"stopped by a signal: checkpoint saved in {cli.run_dir}; resume with --ckpt_path last "
              f"(exit {cli.exit_code})", file=sys.stderr)
        raise SystemExit(cli.exit_code)
    return cli


def _read_json(path: Path) -> dict:
    import json

    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _fail(message: str, code: int) -> None:
    print(message, file=sys.stderr)
    raise SystemExit(code)
