"""Where a sweep runs: `cluster.py` (a running Ray cluster and its capacity), `storage.py`
(one prefix every node reaches), `tracking_server.py` (cluster.yaml's `mlflow server`)."""
