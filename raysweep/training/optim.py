"""The one recipe every classifier here trains with: AdamW under a one-cycle cosine schedule.

The trial loop (`loop.py`) adds mixed precision, warm-up epochs on real data and resuming;
the reference classifier and the Classification Accuracy Score train through `fit_classifier`,
a plain loop whose every random draw comes from one seeded generator.
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
import torch.nn.functional as F

# Share of the steps the learning rate rises for, then anneals along a cosine to ~0.
WARMUP_SHARE = 0.15


def one_cycle_adamw(parameters: Iterable[torch.nn.Parameter], *, lr: float, weight_decay: float,
                    total_steps: int) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """AdamW and its one-cycle cosine schedule over `total_steps` optimizer steps."""
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr,
                                                   total_steps=max(1, total_steps),
                                                   pct_start=WARMUP_SHARE, anneal_strategy="cos")
    return optimizer, schedule


def fit_classifier(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int,
                   batch_size: int, lr: float, weight_decay: float, seed: int,
                   transform: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None
                   ) -> torch.nn.Module:
    """Train `model` on normalised images `x` (N, C, H, W) and labels `y` with cross-entropy;
    batch order (and `transform(batch, generator)`, if given) draw from one generator seeded
    with `seed`. Returns the model in eval mode."""
    gen = torch.Generator().manual_seed(int(seed))
    steps_per_epoch = max(1, -(-len(y) // batch_size))
    optimizer, schedule = one_cycle_adamw(model.parameters(), lr=lr, weight_decay=weight_decay,
                                          total_steps=epochs * steps_per_epoch)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=gen)
        for step in range(steps_per_epoch):
            index = order[step * batch_size:(step + 1) * batch_size]
            batch = x[index] if transform is None else transform(x[index], gen)
            loss = F.cross_entropy(model(batch), y[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
    return model.eval()
