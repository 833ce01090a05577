"""Real vs synthetic feature distributions: Fréchet distance, KID, precision and recall.

Fréchet distance and KID are torchmetrics' `FrechetInceptionDistance` and
`KernelInceptionDistance`, given features instead of images: the caller extracts features once
with an offline network (the sweep's reference classifier, or Inception when the user has its
weights) and every class slice reuses them. Precision and recall are the k-nearest-neighbour
manifold estimates of Kynkäänniemi et al. (2019), which torchmetrics does not ship: precision is
the share of synthetic samples inside the real manifold, recall the share of real samples
inside the synthetic one.
"""

from __future__ import annotations

import torch
from torchmetrics.image.fid import FrechetInceptionDistance
from torchmetrics.image.kid import KernelInceptionDistance

KID_SUBSETS = 20
NEIGHBOURS = 3


class _GivenFeatures(torch.nn.Module):
    """The 'feature extractor' torchmetrics calls: the inputs already are features."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _manifold_coverage(reference: torch.Tensor, queries: torch.Tensor, k: int) -> float:
    """Share of `queries` within the k-NN radius of at least one `reference` sample."""
    k = min(k, len(reference) - 1)
    radii = torch.cdist(reference, reference).kthvalue(k + 1, dim=1).values  # +1: self at 0
    inside = torch.cdist(queries, reference) <= radii[None, :]
    return float(inside.any(dim=1).float().mean())


def distribution_metrics(real: torch.Tensor, synthetic: torch.Tensor, seed: int = 0) -> dict[str, float]:
    """Fréchet distance, KID (mean and std over subsets), precision and recall of two feature
    sets (N×D float tensors, at least two samples each)."""
    real, synthetic = real.double(), synthetic.double()
    fid = FrechetInceptionDistance(feature=_GivenFeatures(real.shape[1]))
    fid.update(real, real=True)
    fid.update(synthetic, real=False)
    subset = min(len(real), len(synthetic), 1000)
    kid = KernelInceptionDistance(feature=_GivenFeatures(real.shape[1]), subsets=KID_SUBSETS,
                                  subset_size=subset)
    # float32 kernels: 50 subsets of cubic kernels in float64 cost seconds on a CPU
    kid.update(real.float(), real=True)
    kid.update(synthetic.float(), real=False)
    with torch.random.fork_rng():  # KID draws its subsets with torch's global generator
        torch.manual_seed(seed)
        kid_mean, kid_std = kid.compute()
    return {"frechet_distance": float(fid.compute()), "kid": float(kid_mean),
            "kid_std": float(kid_std),
            "precision": _manifold_coverage(real, synthetic, NEIGHBOURS),
            "recall": _manifold_coverage(synthetic, real, NEIGHBOURS)}
