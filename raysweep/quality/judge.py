"""Judge a sweep's pools once, before trials: quality per pool and per class on the parent run.

Metrics over all classes go on the parent run as `quality_<generator>_seed<seed>_<metric>`; the
per-class table of each pool is logged as `quality/<generator>_seed<seed>.csv`, which the report
shows.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Callable

from mlflow.tracking import MlflowClient

from raysweep.data import DataSplits
from raysweep.quality.cas import classification_accuracy_score
from raysweep.quality.pool import FeatureFn, pool_quality
from raysweep.store.store import SyntheticStore

SUMMARY = ("frechet_distance", "kid", "precision", "recall", "ssim_nearest_real")


def judge_pools(client: MlflowClient, run_id: str, store: SyntheticStore,
                pools: dict[tuple[str, int], str], splits: DataSplits,
                features: FeatureFn, cas_epochs: int,
                log: Callable[[str], None] = print) -> None:
    """`features` maps images to the features the distribution metrics compare: the
    reference classifier's, or Inception's when the user gave its weights."""
    train, test = splits.train, splits.test
    class_names = list(train.class_names)
    with tempfile.TemporaryDirectory() as directory:
        for (generator, seed), key in pools.items():
            start = time.perf_counter()
            pool = store.read(key, store.count(key))
            table = pool_quality(train.images, train.labels, pool.images, pool.labels,
                                 features, class_names, seed=seed)
            cas = classification_accuracy_score(pool.images, pool.labels, test.images,
                                                test.labels, train.num_classes,
                                                epochs=cas_epochs, seed=seed)
            table["cas_balanced_accuracy"] = float("nan")
            table.loc[table["class"] == "all", "cas_balanced_accuracy"] = cas
            overall = table[table["class"] == "all"].iloc[0]
            prefix = f"quality_{generator}_seed{seed}"
            metrics = {f"{prefix}_{name}": float(overall[name]) for name in SUMMARY}
            metrics[f"{prefix}_cas_balanced_accuracy"] = cas
            metrics[f"{prefix}_seconds"] = time.perf_counter() - start
            for name, value in metrics.items():
                client.log_metric(run_id, name, value)
            path = Path(directory) / f"{generator}_seed{seed}.csv"
            table.to_csv(path, index=False)
            client.log_artifact(run_id, str(path), artifact_path="quality")
            log(f"pool {key} ({generator}, seed {seed}): Fréchet distance "
                f"{overall['frechet_distance']:.2f}, KID {overall['kid']:.4f}, precision "
                f"{overall['precision']:.2f}, recall {overall['recall']:.2f}, SSIM to nearest "
                f"real {overall['ssim_nearest_real']:.2f}, CAS {cas:.3f} "
                f"({metrics[f'{prefix}_seconds']:.0f}s)")
