"""`LotteryPopulationModule`: a whole lottery-ticket study (seeds x controls) as one population.

Frankle & Carbin's LeNet figure needs, per seed, the ticket run and two controls that reuse its
masks: random re-initialisation (same masks, fresh theta_0' every level) and random pruning (the
ticket's per-layer counts, random positions). All of them train the same levels on the same
batches, so they train side by side: member (control c, seed s) is one vmapped network of a
`PopulationModule`, the levels advance in lockstep, and at every level end each member is pruned
from its own weights (ticket) or from its seed's ticket (controls), reset and trained again.

Member (c, s) follows the run `LotteryTicketModule` would train alone with `seed_everything: s`,
`control: c`, `control_seed: s` and, for the controls, `mask_source:` the ticket run of seed s
(a test checks weights, masks and per-level rows against those separate runs).

The levels, masks, resets, controls and early stopping are the `IMP` object (imp.py) that
drives `LotteryTicketModule`, here with K members: validation loss every `eval_every` iterations
selects each member's early-stopping iteration, the test set is only evaluated (at that
iteration and at the level's end), the trained weights of the level's end are what the next
masks are computed from. Outputs: `lottery_population.json` (every member's per-level rows) and
the `lottery_rounds` figure (mean +- std over seeds per control).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Optional

import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn

from lit_papers.core.figures import run_dir, save_figure
from lit_papers.core.optim import Optim
from lit_papers.core.population import PopulationModule
from lit_papers.core.stacked_members import StackedMembers

from .imp import CONTROLS, IMP
from .initializers import INITIALIZERS
from .masks import check_rates, layer_rates, prunable_weights
from .members import StackedNetworks
from .pruning import PRUNING
from .schedule import LevelPlan, check_budget, train_the_levels


class LotteryPopulationModule(PopulationModule):
    """Iterative magnitude pruning for `len(controls) x len(seeds)` members trained at once.

    Args (network and `optim` as in ClassifierModule, with optim.schedule constant, as in the
    paper's LeNet and Conv experiments; steps run by `ChunkedSteps`, as in PopulationModule):
        seeds: one member per seed and control; seed s gives theta_0 and the controls' draws.
        controls: any of `ticket`, `reinit`, `random_prune`; with `ticket` present, the controls
            of seed s take their masks (reinit) or per-layer counts (random_prune) from the
            ticket member of seed s, as in the paper; without it they prune on their own.
        rounds, round_steps, strategy, prune_rate, conv_prune_rate, output_prune_rate,
        rewind_iteration, weight_init: as in LotteryTicketModule.
        eval_every: validation (early-stopping) interval in iterations; must divide every
            level's length.
    """

    checkpoint_monitor = None  # resume from last.ckpt; early stopping is per member and per level
    test_after_fit = False  # test accuracy is measured per level, at each member's early stop
    ensemble_metrics = False  # tickets and controls at different sparsities are not an ensemble
    ddp_alternative = "LotteryTicketModule (one network per run, sweeps/lottery.yaml for the study)"

    def __init__(self, arch: str = "lenet300_100", arch_kwargs: Optional[dict] = None,
                 num_classes: Optional[int] = None, input_shape: Optional[Sequence[int]] = None,
                 optim: Optim = Optim(lr=1.2e-3), step_capture: str = "none",
                 steps_per_call: int = 1, seeds: Sequence[int] = (0, 1, 2),
                 controls: Sequence[str] = CONTROLS, rounds: int = 5, round_steps: int = 1000,
                 strategy: str = "layerwise", prune_rate: float = 0.2,
                 conv_prune_rate: Optional[float] = None, output_prune_rate: Optional[float] = None,
                 rewind_iteration: int = 0, weight_init: str = "glorot_normal", eval_every: int = 100):
        PRUNING.get(strategy), INITIALIZERS.get(weight_init)  # fail fast, listing valid names
        schedule = Optim.of(optim).schedule
        if schedule != "constant":
            raise ValueError(f"{type(self).__name__} trains every level at a constant learning rate, as the "
                             f"paper's LeNet and Conv experiments; got optim.schedule={schedule!r} "
                             f"(LotteryTicketModule takes a schedule)")
        seeds, controls = [int(s) for s in seeds], [str(c) for c in controls]
        bad = [c for c in controls if c not in CONTROLS]
        if bad or not controls or len(set(controls)) != len(controls):
            raise ValueError(f"controls must be distinct names from {', '.join(CONTROLS)}, got {controls}")
        if not seeds or len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be a non-empty list of distinct integers, got {seeds}")
        if eval_every < 1:
            raise ValueError(f"eval_every must be >= 1 iteration, got {eval_every}")
        plan = LevelPlan(rounds, round_steps, rewind_iteration)  # validates the numbers
        check_rates(strategy, prune_rate, conv_prune_rate, output_prune_rate)
        plan.check_interval(eval_every, "eval_every")
        # member index = c * S + s
        self.imp = IMP(plan, strategy, [c for c in controls for _ in seeds], [s for _ in controls for s in seeds])
        super().__init__(step_capture, steps_per_call, population=self.imp.num_members,
                         member_seeds=self.imp.seeds, arch=arch, arch_kwargs=arch_kwargs,
                         num_classes=num_classes, input_shape=input_shape, optim=optim)
        # under LightningCLI hparams hold only this signature: the parent's settings it fixes
        for key, value in (("population", self.num_members), ("member_seeds", self.imp.seeds)):
            self.hparams.setdefault(key, value)
        self.stepper.after_step = self._after_step  # the level loop, on the host after every step

    @property
    def plan(self) -> LevelPlan:
        return self.imp.plan

    @property
    def histories(self) -> list[list[dict]]:
        """Every member's per-level rows."""
        return self.imp.histories

    @property
    def member_controls(self) -> list[str]:
        return self.imp.controls

    # -- members -----------------------------------------------------------------------------
    @property
    def num_members(self) -> int:
        return self.imp.num_members

    def resolved_seeds(self) -> list[int]:
        return list(self.imp.seeds)

    def build_member(self) -> nn.Module:
        net = super().build_member()
        INITIALIZERS.get(self.hparams.weight_init)(net)
        return net

    def build_network(self) -> StackedMembers:
        stacked = super().build_network()
        with torch.random.fork_rng(devices=[]):  # the layer names and shapes only: leave the run's RNG alone
            template = self.build_member()
        self.prunable = list(prunable_weights(template))
        hp = self.hparams
        self.imp.rates = layer_rates(template, hp.prune_rate, hp.conv_prune_rate, hp.output_prune_rate)
        self.member_nets = StackedNetworks(stacked, self.prunable, self.build_member)  # what IMP works on
        return stacked

    def member_labels(self) -> list[str]:
        return [f"{c}, seed {s}" for c, s in zip(self.member_controls, self.resolved_seeds())]

    def masks(self) -> dict[str, Tensor]:
        """name -> (K, *shape) bool masks (True = kept) of the prunable weights."""
        return self.imp.masks(self.device)

    def densities(self) -> list[float]:
        return [self.imp.density(k) for k in range(self.num_members)]

    # -- fit wiring --------------------------------------------------------------------------
    def check_trainer(self, trainer) -> None:
        """The levels define the study's length; called before the run folder exists and in `setup`."""
        super().check_trainer(trainer)
        check_budget(trainer, self.plan)

    def setup(self, stage: str) -> None:
        super().setup(stage)
        if stage != TrainerFn.FITTING.value:
            return
        self.check_trainer(self.trainer)
        train_the_levels(self.trainer, self.plan)
        self.imp.start(self.member_nets)

    # -- the level loop, after every optimizer step ------------------------------------------
    # Validation runs here rather than in Lightning's validation loop: `eval_every` may fall inside
    # a call of `steps_per_call` steps (the MNIST-1D study validates every 25 iterations and takes
    # 10 per call), and a level must end exactly at its last step, also in the middle of a call.
    def _after_step(self) -> bool:
        """Runs on the host after every optimizer step (`ChunkedSteps.after_step`), with
        `global_step` counting it; False once the study is finished (the call's remaining
        minibatches are skipped)."""
        imp, step = self.imp, self.global_step
        if imp.finished:
            return False
        imp.after_step(step, self.member_nets)  # theta_k: the state after k steps
        if (step - self.plan.start(imp.level)) % self.hparams.eval_every == 0:
            imp.record_validation(*self._evaluate(self.trainer.datamodule.val_dataloader()), step, self.member_nets)
        if imp.level_ends_at(step):
            self._end_level()
        return not imp.finished

    @torch.no_grad()
    def _evaluate(self, loader) -> tuple[Tensor, Tensor]:
        """Per-member (loss, accuracy), each (K,), over a whole loader."""
        was_training = self.net.training
        self.net.eval()
        total = torch.zeros(3, self.num_members, device=self.device)
        for x, y in loader:
            x, y = x.to(self.device), y.to(self.device)
            losses, correct = self.member_losses(x, y)
            total[0] += losses * len(y)
            total[1] += correct
            total[2] += len(y)
        self.net.train(was_training)
        return total[0] / total[2], total[1] / total[2]

    @torch.no_grad()
    def _end_level(self) -> None:
        """Records the level for every member and, unless it was the last, prunes, resets and
        restarts the optimizer (IMP decides; the test set is evaluated, never used to select)."""
        test = self.trainer.datamodule.test_dataloader()
        rows = self.imp.end_level(self.member_nets, lambda: self._evaluate(test))
        self._log_level(rows[0]["level"])
        self._write_history()
        if not self.imp.finished:
            self._restart_optimizer()

    def _restart_optimizer(self) -> None:
        """A fresh optimizer for the new level, in place: zero moments and step counts are Adam's
        (and SGD momentum's) fresh state, and a captured step keeps pointing at the same tensors."""
        opt = self.optimizers().optimizer
        for state in opt.state.values():
            for value in state.values():
                if torch.is_tensor(value):
                    value.zero_()

    # -- outputs -----------------------------------------------------------------------------
    def _log_level(self, level: int) -> None:
        """Per-control means of the level's rows, straight to the loggers (any step, not only
        logging steps)."""
        metrics: dict[str, float] = {"lottery/level": float(level)}
        for control in dict.fromkeys(self.member_controls):
            rows = [h[-1] for h, c in zip(self.histories, self.member_controls) if c == control]
            for key in ("percent_remaining", "es_iteration", "es_test_acc", "final_test_acc"):
                metrics[f"lottery/{control}/{key}"] = sum(float(r[key]) for r in rows) / len(rows)
        for logger in self.loggers:
            logger.log_metrics(metrics, step=self.global_step)

    def groups(self) -> dict[str, list[list[dict]]]:
        """control -> the per-level histories of its seeds (the report's input)."""
        out: dict[str, list[list[dict]]] = {}
        for control, history in zip(self.member_controls, self.histories):
            if history:
                out.setdefault(control, []).append(history)
        return out

    def _write_history(self) -> None:
        folder = run_dir(self.trainer)
        if folder is None or not self.trainer.is_global_zero:
            return
        hp = self.hparams
        meta = {k: hp[k] for k in ("arch", "strategy", "prune_rate", "rewind_iteration", "round_steps",
                                   "rounds", "eval_every")}
        members = [{"member": k, "control": c, "seed": s, "levels": h}
                   for k, (c, s, h) in enumerate(zip(self.member_controls, self.resolved_seeds(), self.histories))]
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "lottery_population.json.tmp"
        tmp.write_text(json.dumps({"config": meta, "members": members}, indent=2))
        tmp.replace(folder / "lottery_population.json")

    def on_fit_end(self) -> None:
        super().on_fit_end()
        from .report import markdown_table, rounds_figure

        groups = self.groups()
        if groups:
            save_figure(self.trainer, rounds_figure(groups, "IMP study: mean ± std over seeds"), "lottery_rounds")
            if self.trainer.is_global_zero:
                print(markdown_table(groups))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["lottery_population"] = self.imp.state_dict()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("lottery_population")
        if state is None or "histories" not in state or "pruned_at" not in state:
            raise ValueError("checkpoint has no lottery study state of this version: resume "
                             "LotteryPopulationModule runs from their own checkpoints")
        self.imp.load_state_dict(state)
