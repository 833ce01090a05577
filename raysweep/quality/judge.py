"""Judge a sweep's pools once, before trials: quality per pool and per class on the parent run.

Metrics over all classes go on the parent run as `quality_<pool>_<metric>` (the pool's slug:
`ddpm_seed0`, `inpaint-ddpm_seed0_background0.35`); the per-class table of each pool is logged
as `quality/<pool>.csv`, which the report shows.
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
from raysweep.store import SyntheticStore
from raysweep.synthesis.identity import PoolId

SUMMARY = ("frechet_distance", "kid", "precision", "recall", "ssim_nearest_real")


def judge_pools(client: MlflowClient, run_id: str, store: SyntheticStore,
                pools: dict[PoolId, str], splits: DataSplits,
                features: FeatureFn, cas_epochs: int,
                log: Callable[[str], None] = print) -> None:
    """`features` maps images to the features the distribution metrics compare: the
    reference classifier's, or Inception's when the user gave its weights."""
    train, test = splits.train, splits.test
    class_names = list(train.class_names)
    with tempfile.TemporaryDirectory() as directory:
        for pool, key in pools.items():
            start = time.perf_counter()
            images = store.read(key, store.count(key))
            table = pool_quality(train.images, train.labels, images.images, images.labels,
                                 features, class_names, seed=pool.seed)
            cas = classification_accuracy_score(images.images, images.labels, test.images,
                                                test.labels, train.num_classes,
                                                epochs=cas_epochs, seed=pool.seed)
            table["cas_balanced_accuracy"] = float("nan")
            table.loc[table["class"] == "all", "cas_balanced_accuracy"] = cas
            overall = table[table["class"] == "all"].iloc[0]
            prefix = f"quality_{pool.slug}"
            metrics = {f"{prefix}_{name}": float(overall[name]) for name in SUMMARY}
            metrics[f"{prefix}_cas_balanced_accuracy"] = cas
            metrics[f"{prefix}_seconds"] = time.perf_counter() - start
            for name, value in metrics.items():
                client.log_metric(run_id, name, value)
            path = Path(directory) / f"{pool.slug}.csv"
            table.to_csv(path, index=False)
            client.log_artifact(run_id, str(path), artifact_path="quality")
            log(f"pool {key} ({pool.describe()}): Fréchet distance "
                f"{overall['frechet_distance']:.2f}, KID {overall['kid']:.4f}, precision "
                f"{overall['precision']:.2f}, recall {overall['recall']:.2f}, SSIM to nearest "
                f"real {overall['ssim_nearest_real']:.2f}, CAS {cas:.3f} "
                f"({metrics[f'{prefix}_seconds']:.0f}s)")
