"""Training classifiers, without Ray: everything a trial does between its data and its metrics.

- `compose.py`: how synthetic images enter a trial's training set (`add`, `replace`, `only`).
- `loop.py`: the trial's training loop as a plain function on any torch device:

      from raysweep.training.loop import TrialData, train_classifier
      from raysweep.training.device import resolve_device
      train_classifier(TrialData(images, labels, is_synthetic, splits), settings,
                       backbone="resnet10t", augmentation="classic", seed=0,
                       metric="val_balanced_accuracy", mode="max",
                       device=resolve_device("cuda"), report=lambda metrics, state, final: ...)

- `evaluation.py`: predictions and the metrics every trial reports; `artifacts.py`: the files
  the last epoch leaves (confusion matrix, images used).
- `reference.py`: the reference classifier (saliency, quality, filtering), stored by content.

`raysweep/trial.py` wraps the loop for Ray Tune; benchmarks and the GPU test tier call it
directly, so nothing here imports Ray. Import the modules themselves: `raysweep validate` plans
with `compose.py` alone, without the loop's kornia and timm.
"""
