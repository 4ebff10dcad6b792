"""`MemberLabelsDataModule`: one image set, a different training labelling per population member.

Zhang et al.'s label randomization at several corruption levels is a population: the members
see the same images in the same order and differ only in their training labels, so K levels
train in one process. Training batches are `(x (B, C, H, W), y (B, K))`, column k holding member
k's labels; validation and test labels stay clean and shared, so `pop/<k>/train/acc` measures
how well member k fits its labels and `pop/<k>/val/acc` how well it generalises.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

import torch

from .corruptions import apply_corruption
from .vision import VisionDataModule

LABEL_KINDS = ("partial_labels", "random_labels")


class MemberLabelsDataModule(VisionDataModule):
    """VisionDataModule whose training labels are corrupted per member.

    Args (besides VisionDataModule's, whose own `corruption` must stay `none`):
        member_probs: corruption level of each member (its length is the population size).
        member_corruption: `partial_labels` (a label is redrawn uniformly with probability p)
            or `random_labels` (every label redrawn; member_probs then only sets K).
        member_seed: member k's corruption draws use seed member_seed + k.
    """

    def __init__(self, member_probs: Sequence[float] = (0.0, 0.5, 1.0),
                 member_corruption: str = "partial_labels", member_seed: int = 0,
                 dataset: str = "mnist5k", root: str = "data", batch_size: int = 60,
                 eval_batch_size: int = 1000, val_size: int = 500, seed: int = 0, normalize: bool = True,
                 augment: bool = False, on_device: bool = False, num_workers: int = 0,
                 download: bool = True, train_subset: Optional[int] = None):
        if member_corruption not in LABEL_KINDS:
            raise ValueError(f"member_corruption must be one of {LABEL_KINDS}, got {member_corruption!r}")
        if not member_probs or any(not 0.0 <= p <= 1.0 for p in member_probs):
            raise ValueError(f"member_probs must be a non-empty list of levels in [0, 1], got {member_probs}")
        super().__init__(dataset=dataset, root=root, batch_size=batch_size, eval_batch_size=eval_batch_size,
                         val_size=val_size, seed=seed, normalize=normalize, augment=augment,
                         on_device=on_device, num_workers=num_workers, download=download,
                         train_subset=train_subset)
        # The parent's own corruption stays off; under LightningCLI hparams hold only this signature.
        for key, value in (("corruption", "none"), ("corruption_prob", 1.0), ("corruption_seed", 0),
                           ("corrupt_test", False)):
            self.hparams.setdefault(key, value)
        self.member_probs = [float(p) for p in member_probs]
        self.member_corruption, self.member_seed = member_corruption, int(member_seed)

    @property
    def num_members(self) -> int:
        return len(self.member_probs)

    def setup(self, stage: Optional[str] = None) -> None:
        if self._ready:
            return
        super().setup(stage)
        x, y = self.train_x.cpu(), self.train_y.cpu()
        columns = []
        for k, prob in enumerate(self.member_probs):
            _, y_k, _, _ = apply_corruption(self.member_corruption, x, y, x[:1], y[:1], prob=prob,
                                            seed=self.member_seed + k, num_classes=self.num_classes)
            columns.append(y_k)
        self.clean_train_y = y
        self.train_y = torch.stack(columns, dim=1).to(self.train_y.device)  # (N, K)

    def label_agreement(self) -> list[float]:
        """Fraction of each member's training labels that equal the true ones (after `setup`)."""
        return (self.train_y.cpu() == self.clean_train_y[:, None]).float().mean(0).tolist()
