"""When each IMP level (round) starts and ends, in global optimizer steps.

Level 0 trains the dense net for ``round_steps`` iterations. With reset to theta_0
(``rewind_iteration = 0``) every later level trains ``round_steps`` iterations too; with
rewinding to theta_k (Frankle et al. 2020, "late resetting") a level resumes training at
iteration k, so it trains ``round_steps - k`` iterations and its learning-rate schedule
starts at k.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LevelPlan:
    """Step bookkeeping of ``rounds`` pruning rounds, i.e. ``rounds + 1`` trained levels."""

    rounds: int
    round_steps: int
    rewind_iteration: int = 0

    def __post_init__(self):
        if self.rounds < 0 or self.round_steps <= 0:
            raise ValueError(f"need rounds >= 0 and round_steps > 0, got {self.rounds}, {self.round_steps}")
        if not 0 <= self.rewind_iteration < self.round_steps:
            raise ValueError(f"rewind_iteration must be in [0, round_steps={self.round_steps}), "
                             f"got {self.rewind_iteration}")

    @property
    def levels(self) -> int:
        return self.rounds + 1

    def offset(self, level: int) -> int:
        """Training iteration at which ``level`` starts (k for rewound levels, else 0)."""
        return 0 if level == 0 else self.rewind_iteration

    def length(self, level: int) -> int:
        return self.round_steps - self.offset(level)

    def start(self, level: int) -> int:
        """Global step at which ``level`` starts."""
        return 0 if level == 0 else self.round_steps + (level - 1) * self.length(1)

    def end(self, level: int) -> int:
        """Global step at which ``level`` is finished (exclusive)."""
        return self.start(level) + self.length(level)

    @property
    def total_steps(self) -> int:
        return self.end(self.rounds)

    def check_interval(self, every: int, label: str) -> None:
        """Evaluating every `every` iterations must land on every level's last step (its end)."""
        bad = [level for level in range(self.levels) if self.length(level) % every]
        if bad:
            raise ValueError(f"{label}={every} must divide every level's length (round_steps={self.round_steps}, "
                             f"rewind_iteration={self.rewind_iteration}); levels {bad} do not fit")

    def level_at(self, step: int) -> int:
        """The level that global step ``step`` belongs to (the last level for step >= total)."""
        level = 0
        while level < self.rounds and step >= self.end(level):
            level += 1
        return level

    def iteration(self, step: int) -> int:
        """Training iteration of global ``step`` as counted inside its level (after the offset)."""
        level = self.level_at(step)
        return self.offset(level) + step - self.start(level)


# trainer.max_epochs when the user set no epoch budget: None before fit; during fit 1000 (neither
# max_epochs nor max_steps given) or -1 (max_steps given).
_UNSET_EPOCHS = (None, -1, 1000)


def check_budget(trainer, plan: LevelPlan) -> None:
    """The levels define an IMP run's length: `trainer.max_epochs` is refused (an epoch is one
    pass over the loader, unrelated to the levels); `trainer.max_steps` may only shorten the run."""
    if trainer.max_epochs not in _UNSET_EPOCHS:
        raise ValueError(f"trainer.max_epochs={trainer.max_epochs} has no meaning for an IMP run: its length is "
                         f"(rounds + 1) levels of round_steps iterations ({plan.total_steps} steps now). Set "
                         f"--model.init_args.rounds / --model.init_args.round_steps, or stop it early with "
                         f"--trainer.max_steps=N, and drop trainer.max_epochs")
    if trainer.max_steps > plan.total_steps:
        raise ValueError(f"trainer.max_steps={trainer.max_steps} exceeds the levels' {plan.total_steps} steps: "
                         f"raise --model.init_args.rounds or --model.init_args.round_steps instead")


def train_the_levels(trainer, plan: LevelPlan) -> None:
    """Makes the running `fit` take exactly the levels' optimizer steps (or `trainer.max_steps`,
    when that stops it earlier), however many epochs that is; `check_budget` has passed."""
    loop = trainer.fit_loop
    # Written on the epoch loop because Lightning offers no public setter for the step budget of a
    # fit (`Trainer.max_steps` and `fit_loop.max_steps` are read-only properties), and the budget
    # is only known here, once the module (its rounds and round_steps) meets the trainer.
    loop.epoch_loop.max_steps = level_budget(trainer, plan)
    loop.max_epochs = -1  # the levels, not epochs, end the run


def level_budget(trainer, plan: LevelPlan) -> int:
    """Optimizer steps the run trains: every level, or fewer when `trainer.max_steps` stops it early."""
    if 0 <= trainer.max_steps < plan.total_steps:
        if trainer.is_global_zero:
            print(f"trainer.max_steps={trainer.max_steps} stops IMP early, in level {plan.level_at(trainer.max_steps)} "
                  f"of {plan.levels} ({plan.total_steps} steps in all)")
        return trainer.max_steps
    return plan.total_steps
