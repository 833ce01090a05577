"""The training loop as a plain function: no Ray, runs on whatever torch device it is given.

    from raysweep.training import TrialData, train_classifier, resolve_device
    train_classifier(TrialData(images, labels, is_synthetic, splits), settings,
                     backbone="resnet10t", augmentation="classic", seed=0,
                     metric="val_balanced_accuracy", mode="max",
                     device=resolve_device("cuda"), report=lambda metrics, state, final: ...)

`raysweep/trial.py` wraps it for Ray Tune (pool images from the synthesis service,
`tune.report` with checkpoints, resume from `tune.get_checkpoint()`); benchmarks and the GPU
test tier call it directly, so it must never import Ray.
"""

from raysweep.training.device import autocast_dtype, fits_on_device, resolve_device
from raysweep.training.loop import FinalEvaluation, Report, TrialData, train_classifier

__all__ = ["FinalEvaluation", "Report", "TrialData", "autocast_dtype", "fits_on_device",
           "resolve_device", "train_classifier"]
