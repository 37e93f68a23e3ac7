"""Distillation targets and loss: a student member learns from an ensemble's probabilities.

`ensemble.distill` makes the `Teacher`; `train.train_member` adds `distill_loss` to its loop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

IGNORE = -100  # the label id of a training row without a gold label (cross_entropy's ignore_index)


@dataclass(frozen=True)
class Teacher:
    """Distillation targets: an ensemble's probabilities for every training row, and how to use them.

    The student's loss is ``hard_weight * CE(labels) + (1 - hard_weight) * T^2 * KL(teacher_T || student_T)``
    with both distributions softened by the temperature T (Hinton et al., 2015). Training rows
    whose label is None (unlabelled transfer rows) count in the KL term only.
    """

    probs: np.ndarray  # (train rows, classes), rows in the training split's order
    temperature: float = 2.0
    hard_weight: float = 0.5


def distill_loss(logits: torch.Tensor, labels: torch.Tensor, teacher: torch.Tensor, spec: Teacher) -> torch.Tensor:
    """The distillation loss of a batch (see `Teacher`); `teacher` holds probabilities, not logits.

    Example:
        >>> z = torch.tensor([[2.0, 0.0]]); p = torch.softmax(z, -1)
        >>> abs(round(distill_loss(z, torch.tensor([0]), p, Teacher(p.numpy(), 1.0, 0.0)).item(), 6))  # student = teacher
        0.0
    """
    t = spec.temperature
    # rows without a gold label (a transfer set, label IGNORE) learn from the teacher only
    known = (labels != IGNORE).sum().clamp_min(1)
    hard = torch.nn.functional.cross_entropy(logits.float(), labels, ignore_index=IGNORE, reduction="sum") / known
    # softening probabilities p by T: p^(1/T), renormalised (a softmax of log p / T)
    target = torch.softmax(torch.log(teacher.clamp_min(1e-12)) / t, dim=-1)
    soft = torch.nn.functional.kl_div(torch.log_softmax(logits.float() / t, dim=-1), target, reduction="batchmean")
    return spec.hard_weight * hard + (1 - spec.hard_weight) * t * t * soft
