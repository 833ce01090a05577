"""The files a trial leaves for MLflow: confusion matrix, the synthetic images it used, test
metrics. Kept apart from the loop so that the loop needs no plotting library."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from raysweep.data import DataSplits
from raysweep.training.evaluation import confusion
from raysweep.figures import confusion_matrix_figure, sample_grid
from raysweep.training.loop import FinalEvaluation


def write_trial_artifacts(directory: Path, final: FinalEvaluation, metrics: dict,
                          splits: DataSplits, synthetic_images: np.ndarray,
                          synthetic_labels: np.ndarray) -> None:
    """Write the trial's artifacts into `directory` (created)."""
    directory.mkdir()
    class_names = list(splits.train.class_names)
    matrix = confusion(splits.test.labels, final.test_probabilities, len(class_names))
    confusion_matrix_figure(matrix, class_names, directory / "confusion_matrix.png",
                            title=f"test accuracy {metrics['test_accuracy']:.3f}")
    if len(synthetic_labels):
        sample_grid(synthetic_images, synthetic_labels, class_names,
                    directory / "synthetic_samples.png", title="synthetic images this trial used")
    test_metrics = {key: value for key, value in metrics.items() if key.startswith("test_")}
    (directory / "test_metrics.json").write_text(json.dumps(test_metrics, indent=2))
