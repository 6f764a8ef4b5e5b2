"""``mlops``: the command line and the Python client of a deployment.

Both talk to a deployment (the local host or Azure Functions) over its HTTP API only; the
command writes to storage only to drop a dataset (``mlops drop``), and the operator verbs
(``quarantine``, ``dead-letters``, ``replay``) read the platform's dead-letter and poison
queues as ``python -m ops`` does. ``mlops init`` reads a dataset locally and writes a spec.

    from mlops.client import MlopsClient
    client = MlopsClient("http://localhost:7071", key="local-function-key")
    client.predict("wine", [{"alcohol": 13.2, ...}])
"""
from __future__ import annotations

__all__ = ["MlopsClient"]


def __getattr__(name: str):
    # The client is imported on first use: `mlops --help` need not load httpx.
    if name == "MlopsClient":
        from mlops.client import MlopsClient

        return MlopsClient
    raise AttributeError(name)
