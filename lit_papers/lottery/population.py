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

The levels, early stopping and test evaluation follow `LotteryTicketModule`: validation loss
every `eval_every` iterations selects each member's early-stopping iteration, the test set is
only evaluated (at that iteration and at the level's end), the trained weights of the level's
end are what the next masks are computed from. Outputs: `lottery_population.json` (every member's
per-level rows) and the `lottery_rounds` figure (mean +- std over seeds per control).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Optional

import torch
from lightning.pytorch.trainer.states import TrainerFn
from torch import Tensor, nn

from lit_papers.core.classifier import ClassifierModule, parent_args
from lit_papers.core.figures import run_dir, save_figure
from lit_papers.core.population import PopulationModule, StackedMembers

from .initializers import INITIALIZERS
from .masks import check_rates, layer_rates, prunable_weights
from .imp import CONTROLS
from .pruning import PRUNING, prune, prune_random_counts
from .schedule import LevelPlan, check_budget, level_budget
from .snapshots import fresh_init


class LotteryPopulationModule(PopulationModule):
    """Iterative magnitude pruning for `len(controls) x len(seeds)` members trained at once.

    Args (network and optimizer as in ClassifierModule; the learning rate is constant, as in the
    paper's LeNet and Conv experiments; steps run as in ChunkedClassifierModule):
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
                 optimizer: str = "adam", lr: float = 1.2e-3, momentum: float = 0.9,
                 weight_decay: float = 0.0, nesterov: bool = False, step_capture: str = "none",
                 steps_per_call: int = 1, seeds: Sequence[int] = (0, 1, 2),
                 controls: Sequence[str] = CONTROLS, rounds: int = 5, round_steps: int = 1000,
                 strategy: str = "layerwise", prune_rate: float = 0.2,
                 conv_prune_rate: Optional[float] = None, output_prune_rate: Optional[float] = None,
                 rewind_iteration: int = 0, weight_init: str = "glorot_normal", eval_every: int = 100):
        PRUNING.get(strategy), INITIALIZERS.get(weight_init)  # fail fast, listing valid names
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
        bad_levels = [lvl for lvl in range(plan.levels) if plan.length(lvl) % eval_every]
        if bad_levels:
            raise ValueError(f"eval_every={eval_every} must divide every level's length (round_steps="
                             f"{round_steps}, rewind_iteration={rewind_iteration}); levels {bad_levels} do not fit")
        self.member_controls = [c for c in controls for _ in seeds]  # member index = c * S + s
        self._member_seeds = [s for _ in controls for s in seeds]
        super().__init__(**parent_args(PopulationModule, locals()), population=len(self.member_controls),
                         member_seeds=self._member_seeds)
        # under LightningCLI hparams hold only this signature: the parents' settings it fixes
        for key, value in (("lr_schedule", "constant"), ("milestones", (0.5, 0.75)), ("gamma", 0.1),
                           ("population", self.num_members), ("member_seeds", self._member_seeds)):
            self.hparams.setdefault(key, value)
        self.plan = plan
        self.level = 0
        self.histories: list[list[dict[str, Any]]] = [[] for _ in range(self.num_members)]
        self._theta0: Optional[dict[str, Tensor]] = None
        self._theta_rewind: Optional[dict[str, Tensor]] = None
        self._early: Optional[dict[str, Any]] = None
        self._last_val: Optional[tuple[Tensor, Tensor]] = None

    # -- members -----------------------------------------------------------------------------
    @property
    def num_members(self) -> int:
        return len(self.member_controls)

    def resolved_seeds(self) -> list[int]:
        return list(self._member_seeds)

    def _make_member(self) -> nn.Module:
        net = ClassifierModule.build_network(self)
        INITIALIZERS.get(self.hparams.weight_init)(net)
        return net

    def build_network(self) -> StackedMembers:
        stacked = StackedMembers(self._make_member, self.resolved_seeds())
        with torch.random.fork_rng(devices=[]):  # the layer names and shapes only: leave the run's RNG alone
            template = self._make_member()
        self.prunable = list(prunable_weights(template))
        hp = self.hparams
        self.rates = layer_rates(template, hp.prune_rate, hp.conv_prune_rate, hp.output_prune_rate)
        return stacked

    def member_labels(self) -> list[str]:
        return [f"{c}, seed {s}" for c, s in zip(self.member_controls, self.resolved_seeds())]

    def _ticket_of(self, k: int) -> Optional[int]:
        """Index of the ticket member with member k's seed (None without a ticket control)."""
        controls = list(dict.fromkeys(self.member_controls))
        if "ticket" not in controls:
            return None
        per_control = len(self.member_controls) // len(controls)
        return controls.index("ticket") * per_control + k % per_control

    def masks(self) -> dict[str, Tensor]:
        """name -> (K, *shape) bool masks (True = kept) of the prunable weights."""
        return {n: ~getattr(self.net, f"pruned-{n.replace('.', '-')}") for n in self.prunable}

    def densities(self) -> list[float]:
        masks = self.masks()
        kept = sum(m.flatten(1).sum(1) for m in masks.values())
        return (kept.float() / sum(m[0].numel() for m in masks.values())).tolist()

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
        loop = self.trainer.fit_loop
        loop.epoch_loop.max_steps = level_budget(self.trainer, self.plan)  # the levels define the length
        loop.max_epochs = -1
        if self._theta0 is None:  # fresh run (a resumed one restores it in on_load_checkpoint)
            # all-kept masks now, so a captured step includes the masking that later levels update
            params = self.net.member_params()
            self.net.set_masks({n: torch.ones_like(params[n], dtype=torch.bool) for n in self.prunable})
            self._theta0 = self._stacked_copy()

    def _stacked_copy(self) -> dict[str, Tensor]:
        state = {n: p.detach().clone() for n, p in self.net.member_params().items()}
        state.update({n: b.clone() for n, b in self.net.member_buffers().items()})
        return state

    @torch.no_grad()
    def _load_stacked_(self, state: dict[str, Tensor], members: Optional[Tensor] = None) -> None:
        """Copies `state` into the members selected by the bool (K,) `members` (all if None), in place."""
        current = {**self.net.member_params(), **self.net.member_buffers()}
        for name, value in state.items():
            target = current[name]
            value = value.to(target.device)  # theta_0 is taken in setup, before the move to the device
            if members is None:
                target.copy_(value)
            else:
                target.copy_(torch.where(members.view(-1, *[1] * (target.dim() - 1)), value, target))
        self.net.mask_weights_()

    # -- the level loop, after every optimizer step ------------------------------------------
    def after_step_host(self) -> bool:
        step, plan = self.global_step, self.plan
        if self.level >= plan.levels:
            return False
        k = plan.rewind_iteration
        if k and self.level == 0 and step == k and self._theta_rewind is None:
            self._theta_rewind = self._stacked_copy()  # theta_k: the state after k steps
        if (step - plan.start(self.level)) % self.hparams.eval_every == 0:
            self._record_validation(*self._evaluate(self.trainer.datamodule.val_dataloader()))
        if step == plan.end(self.level):
            self._end_level()
        return self.level < plan.levels

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
    def _record_validation(self, loss: Tensor, acc: Tensor) -> None:
        """Keeps each member's lowest-validation-loss state of this level (its early stop)."""
        self._last_val = (loss, acc)
        iteration = self.plan.iteration(self.global_step - 1) + 1
        if self._early is None:
            self._early = {"loss": loss.clone(), "acc": acc.clone(),
                          "iteration": torch.full_like(loss, iteration, dtype=torch.long),
                          "state": self._stacked_copy()}
            return
        better = loss < self._early["loss"]
        best = self._early
        best["loss"] = torch.where(better, loss, best["loss"])
        best["acc"] = torch.where(better, acc, best["acc"])
        best["iteration"] = torch.where(better, torch.full_like(best["iteration"], iteration), best["iteration"])
        current = {**self.net.member_params(), **self.net.member_buffers()}  # read in place, no copy
        for name, value in best["state"].items():
            value.copy_(torch.where(better.view(-1, *[1] * (value.dim() - 1)), current[name], value))

    @torch.no_grad()
    def _end_level(self) -> None:
        """Records the level for every member, then (unless last) prunes, resets, restarts Adam."""
        test = self.trainer.datamodule.test_dataloader()
        final_loss, final_acc = self._evaluate(test)
        last = self.level == self.plan.rounds
        new_masks = None if last else self._next_masks()
        self._load_stacked_(self._early["state"])
        es_loss, es_acc = self._evaluate(test)
        densities, masks = self.densities(), self.masks()
        rows = {"es_iteration": self._early["iteration"], "es_val_loss": self._early["loss"],
                "es_val_acc": self._early["acc"], "es_test_loss": es_loss, "es_test_acc": es_acc,
                "final_val_loss": self._last_val[0], "final_val_acc": self._last_val[1],
                "final_test_loss": final_loss, "final_test_acc": final_acc}
        rows = {key: value.tolist() for key, value in rows.items()}
        for k, history in enumerate(self.histories):
            history.append({"level": self.level, "percent_remaining": 100.0 * densities[k],
                            "kept": {n: int(m[k].sum()) for n, m in masks.items()},
                            **{key: values[k] for key, values in rows.items()}})
        self._log_level()
        self._write_history()
        self.level += 1
        self._early = None
        if new_masks is None:
            return
        self.net.set_masks(new_masks)
        self._reset_survivors()
        self._restart_optimizer()

    def _next_masks(self) -> dict[str, Tensor]:
        """Every member's masks for the next level, from the weights at the end of this one."""
        nxt, current = self.level + 1, self.masks()
        params = self.net.member_params()
        seeds, controls = self.resolved_seeds(), self.member_controls
        strategy = self.hparams.strategy
        out: list[Optional[dict[str, Tensor]]] = [None] * self.num_members
        order = sorted(range(self.num_members), key=lambda k: controls[k] != "ticket")  # tickets first
        for k in order:
            mine = {n: m[k] for n, m in current.items()}
            gen = torch.Generator().manual_seed(seeds[k] * 100_003 + nxt)
            ticket = self._ticket_of(k)
            if controls[k] == "reinit" and ticket is not None:
                out[k] = out[ticket]
            elif controls[k] == "random_prune" and ticket is not None:
                counts = {n: int(mine[n].sum()) - int(out[ticket][n].sum()) for n in mine}
                out[k] = prune_random_counts(mine, counts, gen)
            else:
                weights = {n: params[n][k] for n in self.prunable}
                out[k] = prune("random" if controls[k] == "random_prune" else strategy, weights, mine,
                               self.rates, gen)
        return {n: torch.stack([masks[n] for masks in out]) for n in self.prunable}

    def _reset_survivors(self) -> None:
        """Ticket and random-pruning members back to theta_0 (or theta_k); reinit members get a
        fresh draw per level, seeded like LotteryTicketModule's (control_seed = the member's seed)."""
        target = self._theta_rewind if self.plan.rewind_iteration else self._theta0
        self._load_stacked_(target)
        reinit = [k for k, c in enumerate(self.member_controls) if c == "reinit"]
        if not reinit:
            return
        fresh = {n: t.clone() for n, t in target.items()}
        seeds = self.resolved_seeds()
        for k in reinit:
            state = fresh_init(self._make_member, seeds[k] * 100_003 + 50_000 + self.level)
            for name, value in state.items():
                fresh[name][k] = value.to(fresh[name].device)
        chosen = torch.zeros(self.num_members, dtype=torch.bool, device=self.device)
        chosen[reinit] = True
        self._load_stacked_(fresh, chosen)

    def _restart_optimizer(self) -> None:
        """A fresh optimizer for the new level, in place: zero moments and step counts are Adam's
        (and SGD momentum's) fresh state, and a captured step keeps pointing at the same tensors."""
        opt = self.optimizers().optimizer
        for state in opt.state.values():
            for value in state.values():
                if torch.is_tensor(value):
                    value.zero_()

    # -- outputs -----------------------------------------------------------------------------
    def _log_level(self) -> None:
        """Per-control means of the level's rows, straight to the loggers (any step, not only
        logging steps)."""
        metrics: dict[str, float] = {"lottery/level": float(self.level)}
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
        checkpoint["lottery_population"] = {
            "level": self.level, "histories": self.histories, "theta0": self._theta0,
            "theta_rewind": self._theta_rewind, "best": self._early, "last_val": self._last_val}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        state = checkpoint.get("lottery_population")
        if state is None:
            raise ValueError("checkpoint has no lottery study state: resume LotteryPopulationModule runs "
                             "from their own checkpoints")
        self.level, self.histories = state["level"], [list(h) for h in state["histories"]]
        self._theta0, self._theta_rewind = state["theta0"], state["theta_rewind"]
        self._early, self._last_val = state["best"], state["last_val"]
