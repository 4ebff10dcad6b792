"""`IMP`: iterative magnitude pruning of K member networks, written once.

One object holds everything IMP decides, for a single run (K = 1, `LotteryTicketModule`) and for
a whole study trained as one population (`LotteryPopulationModule`): the level plan, every
member's per-weight pruning level (`pruned_at`, from which each level's masks follow), theta_0 /
theta_k / the one-shot dense weights, the reset rule, the controls and their seeds, and each
member's early-stopping bookkeeping. It is plain Python and torch, with no Lightning in it: the
modules call it from their hooks and hand it their networks through the small `MemberNets`
interface below (members.py: a plain network with its `MaskSet`, or a population's stacked members).

Member k has a control (`ticket`, `reinit`, `random_prune`) and a seed. The seed draws the
member's random masks (`seed * 100_003 + level`) and, for `reinit`, its fresh theta_0' of every
level (`seed * 100_003 + 50_000 + level`), so a member of a population and the single run with
`control_seed` = that seed draw the same numbers. A control member takes its masks (`reinit`) or
per-layer counts (`random_prune`) from its reference ticket: the ticket member of the same seed in
the population, else an earlier ticket run's `pruned_at` (`mask_source`), else it prunes on its own.

A new pruning criterion is a function in `PRUNING` (pruning.py); a new control is a name in
`CONTROLS` and a branch in `IMP._member_masks` (its masks) and, if it changes the reset, in
`IMP._reset` (its weights). Both modules then run it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional, Protocol

import torch
from torch import Tensor, nn

from .pruning import prune, prune_random_counts
from .schedule import LevelPlan
from .snapshots import fresh_init

CONTROLS = ("ticket", "reinit", "random_prune")
SCHEDULE_KINDS = ("iterative", "oneshot")
NEVER = torch.iinfo(torch.int16).max  # pruned_at value of a weight that was never pruned

State = dict[str, Tensor]  # name -> (K, *shape): every member's copy of one parameter or buffer
Evaluate = Callable[[], tuple[Tensor, Tensor]]  # -> per-member (loss, accuracy), each (K,)


class MemberNets(Protocol):
    """What IMP needs from the module holding the K member networks."""

    def member_weights(self) -> State:
        """The live prunable weights, name -> (K, *shape)."""

    def copy_members(self) -> State:
        """A copy of every member's parameters and buffers."""

    def live_members(self) -> State:
        """Every member's parameters and buffers as they are now (read, not kept)."""

    def load_members_(self, state: State, members: Optional[Tensor] = None) -> None:
        """Copies `state` into the members selected by the bool (K,) `members` (all if None) in
        place, then zeroes their pruned weights."""

    def set_member_masks(self, masks: State) -> None:
        """name -> (K, *shape) bool masks (True = kept), applied to the weights now and kept."""

    def build_member(self) -> nn.Module:
        """One freshly initialised member network (drawn from the global RNG)."""


class IMP:
    """The level plan, masks, resets, controls, seeds and early stopping of K members.

    Args:
        plan: the levels' lengths in optimizer steps.
        strategy: a `PRUNING` name; `random_prune` members use `random` instead.
        controls, seeds: one per member.
        schedule: `iterative` (prune the last level's trained weights) or `oneshot` (every level
            prunes the dense net's trained weights down to its density).
    """

    def __init__(self, plan: LevelPlan, strategy: str, controls: Sequence[str], seeds: Sequence[int],
                 schedule: str = "iterative"):
        for label, values, valid in (("control", controls, CONTROLS), ("schedule", [schedule], SCHEDULE_KINDS)):
            for value in values:
                if value not in valid:
                    raise ValueError(f"unknown {label} {value!r}; valid {label} names: {', '.join(valid)}")
        if len(controls) != len(seeds) or not controls:
            raise ValueError(f"one seed per member: {len(controls)} controls, {len(seeds)} seeds")
        self.plan, self.strategy, self.schedule = plan, strategy, schedule
        self.controls, self.seeds = list(controls), [int(s) for s in seeds]
        self.rates: dict[str, float] = {}  # per-layer rates, set by the module once its net exists
        self.source_pruned_at: Optional[dict[str, Tensor]] = None  # an earlier ticket run's, (*shape)
        self.level = 0
        self.histories: list[list[dict[str, Any]]] = [[] for _ in self.controls]
        self.theta0: Optional[State] = None
        self.theta_rewind: Optional[State] = None
        self.theta_dense: Optional[State] = None  # one-shot: the trained dense weights
        self.pruned_at: dict[str, Tensor] = {}  # name -> (K, *shape) int16, on the CPU
        self.best: Optional[dict[str, Any]] = None  # this level's lowest validation loss, per member
        self.last_val: Optional[tuple[Tensor, Tensor]] = None

    @property
    def num_members(self) -> int:
        return len(self.controls)

    # -- masks -------------------------------------------------------------------------------
    def masks(self, device: torch.device | str | None = None) -> State:
        """The current level's masks, name -> (K, *shape) bool (True = kept)."""
        return {n: (p > self.level).to(device) for n, p in self.pruned_at.items()}

    def kept(self, k: int) -> dict[str, int]:
        return {n: int((p[k] > self.level).sum()) for n, p in self.pruned_at.items()}

    def density(self, k: int) -> float:
        """Fraction of member k's prunable weights currently kept."""
        return sum(self.kept(k).values()) / sum(p[k].numel() for p in self.pruned_at.values())

    def ticket_of(self, k: int) -> Optional[int]:
        """The ticket member with member k's seed (None if the population has none)."""
        return next((j for j, (c, s) in enumerate(zip(self.controls, self.seeds))
                     if c == "ticket" and s == self.seeds[k]), None)

    # -- the run -------------------------------------------------------------------------------
    def start(self, nets: MemberNets) -> None:
        """Called when a fit starts. A fresh run: nothing pruned, theta_0 = the members now (a
        resumed run's state comes from `load_state_dict` afterwards). No-op once started."""
        if self.theta0 is not None:
            return
        self.pruned_at = {n: torch.full(w.shape, NEVER, dtype=torch.int16, device="cpu")
                          for n, w in nets.member_weights().items()}
        # all-kept masks now, so a captured step includes the masking that later levels update
        nets.set_member_masks(self.masks())
        self.theta0 = nets.copy_members()

    def after_step(self, step: int, nets: MemberNets) -> None:
        """Called with the number of optimizer steps taken: keeps theta_k after k steps of level 0."""
        k = self.plan.rewind_iteration
        if k and self.level == 0 and step == k and self.theta_rewind is None:
            self.theta_rewind = nets.copy_members()

    @property
    def finished(self) -> bool:
        """Every level recorded (`level` then stays at the last one, `plan.rounds`)."""
        return len(self.histories[0]) >= self.plan.levels

    def level_ends_at(self, step: int) -> bool:
        return not self.finished and step == self.plan.end(self.level)

    @torch.no_grad()
    def record_validation(self, loss: Tensor, acc: Tensor, step: int, nets: MemberNets) -> None:
        """Keeps each member's lowest-validation-loss state of this level (its early stop).

        loss, acc: (K,) after `step` optimizer steps.
        """
        self.last_val = (loss, acc)
        iteration = self.plan.iteration(step - 1) + 1
        if self.best is None:
            self.best = {"loss": loss.clone(), "acc": acc.clone(), "state": nets.copy_members(),
                         "iteration": torch.full_like(loss, iteration, dtype=torch.long)}
            return
        best, better = self.best, loss < self.best["loss"]
        best["loss"] = torch.where(better, loss, best["loss"])
        best["acc"] = torch.where(better, acc, best["acc"])
        best["iteration"] = torch.where(better, torch.full_like(best["iteration"], iteration), best["iteration"])
        for name, current in nets.live_members().items():
            value = best["state"][name]
            chosen = better.to(value.device).view(-1, *[1] * (value.dim() - 1))
            value.copy_(torch.where(chosen, current.to(value.device), value))

    @torch.no_grad()
    def end_level(self, nets: MemberNets, evaluate_test: Evaluate) -> list[dict[str, Any]]:
        """Records the level for every member (test set at the level's end and at the early stop),
        then, unless it was the last, prunes, resets the survivors and moves to the next level.
        Returns the level's rows, one per member; unless `finished`, the caller then starts a
        fresh optimizer and learning-rate schedule."""
        final_loss, final_acc = evaluate_test()
        if self.schedule == "oneshot" and self.level == 0:
            self.theta_dense = nets.copy_members()
        new_masks = self._next_masks(nets) if self.level < self.plan.rounds else None
        nets.load_members_(self.best["state"])  # the early-stopping weights, for the test set
        es_loss, es_acc = evaluate_test()
        values = {"es_iteration": self.best["iteration"], "es_val_loss": self.best["loss"],
                  "es_val_acc": self.best["acc"], "es_test_loss": es_loss, "es_test_acc": es_acc,
                  "final_val_loss": self.last_val[0], "final_val_acc": self.last_val[1],
                  "final_test_loss": final_loss, "final_test_acc": final_acc}
        values = {key: value.tolist() for key, value in values.items()}
        rows = [{"level": self.level, "percent_remaining": 100.0 * self.density(k), "kept": self.kept(k),
                 **{key: v[k] for key, v in values.items()}} for k in range(self.num_members)]
        for history, row in zip(self.histories, rows):
            history.append(row)
        self.best = None
        if new_masks is None:
            return rows
        for name, m in new_masks.items():
            newly = (self.pruned_at[name] > self.level) & ~m.cpu()
            self.pruned_at[name][newly] = self.level + 1
        self.level += 1
        nets.set_member_masks(new_masks)
        self._reset(nets)
        return rows

    # -- the next level's masks ------------------------------------------------------------------
    def _next_masks(self, nets: MemberNets) -> State:
        """Every member's masks for the next level, from the weights at the end of this one."""
        weights = nets.member_weights()
        if self.theta_dense is not None:  # one-shot: magnitudes of the trained dense net
            weights = {n: self.theta_dense[n].to(w.device) for n, w in weights.items()}
        current = {n: m.to(weights[n].device) for n, m in self.masks().items()}
        out: list[Optional[dict[str, Tensor]]] = [None] * self.num_members
        # tickets first: a control takes its masks or counts from its seed's ticket
        for k in sorted(range(self.num_members), key=lambda k: self.controls[k] != "ticket"):
            ticket = self.ticket_of(k)
            reference = out[ticket] if ticket is not None else self._source_masks(current)
            out[k] = self._member_masks(k, {n: w[k] for n, w in weights.items()},
                                        {n: m[k] for n, m in current.items()}, reference)
        return {n: torch.stack([masks[n] for masks in out]) for n in current}

    def _source_masks(self, current: State) -> Optional[dict[str, Tensor]]:
        """The earlier ticket run's masks of the next level (None without a mask source)."""
        if self.source_pruned_at is None:
            return None
        return {n: (self.source_pruned_at[n] > self.level + 1).to(m.device) for n, m in current.items()}

    def _member_masks(self, k: int, weights: dict[str, Tensor], mine: dict[str, Tensor],
                      reference: Optional[dict[str, Tensor]]) -> dict[str, Tensor]:
        """Member k's next masks: its control decides whose weights, masks or counts it follows."""
        control = self.controls[k]
        gen = torch.Generator().manual_seed(self.seeds[k] * 100_003 + self.level + 1)
        if control == "reinit" and reference is not None:
            return reference  # the ticket's masks, re-initialised in `_reset`
        if control == "random_prune" and reference is not None:
            counts = {n: int(mine[n].sum()) - int(reference[n].sum()) for n in mine}
            return prune_random_counts(mine, counts, gen)  # the ticket's counts, random positions
        strategy = "random" if control == "random_prune" else self.strategy
        return prune(strategy, weights, mine, self.rates, gen)

    def _reset(self, nets: MemberNets) -> None:
        """Survivors back to theta_0 (or theta_k); `reinit` members get a fresh draw per level."""
        target = self.theta_rewind if self.plan.rewind_iteration else self.theta0
        nets.load_members_(target)
        reinit = [k for k, c in enumerate(self.controls) if c == "reinit"]
        if not reinit:
            return
        fresh = {n: t.clone() for n, t in target.items()}
        for k in reinit:
            state = fresh_init(nets.build_member, self.seeds[k] * 100_003 + 50_000 + self.level)
            for name, value in state.items():
                fresh[name][k] = value.to(fresh[name].device)
        chosen = torch.zeros(self.num_members, dtype=torch.bool)
        chosen[reinit] = True
        nets.load_members_(fresh, chosen)

    # -- checkpoint ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs besides the networks and their mask buffers."""
        return {"level": self.level, "histories": self.histories, "theta0": self.theta0,
                "theta_rewind": self.theta_rewind, "theta_dense": self.theta_dense,
                "pruned_at": self.pruned_at, "best": self.best, "last_val": self.last_val}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.level, self.histories = state["level"], [list(h) for h in state["histories"]]
        self.theta0, self.theta_rewind = state["theta0"], state["theta_rewind"]
        self.theta_dense, self.pruned_at = state["theta_dense"], dict(state["pruned_at"])
        self.best, self.last_val = state["best"], state["last_val"]


def load_mask_history(source: str, levels_needed: int, key: str = "lottery") -> dict[str, Tensor]:
    """The first member's ``pruned_at`` of a ticket run (folder or .ckpt): mask at level l = pruned_at > l."""
    path = Path(source)
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise ValueError(f"mask_source {source!r}: no checkpoint found; give a ticket run folder "
                         "(with checkpoints/last.ckpt) or a .ckpt file")
    state = torch.load(path, map_location="cpu", weights_only=False).get(key)
    if state is None or state["level"] < levels_needed:
        done = None if state is None else state["level"]
        raise ValueError(f"mask_source {source!r} reached level {done}, but {levels_needed} rounds "
                         "are needed: finish that ticket run first or lower model.rounds")
    if "histories" not in state:  # written before IMP held K members: one unstacked run
        return state["pruned_at"]
    return {n: p[0] for n, p in state["pruned_at"].items()}
