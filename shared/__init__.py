"""The domain core of the MLOps system. Nothing in this package imports ``azure.functions``;
the trigger adapters in ``functions/`` translate bindings into the typed objects used here.

The subpackages, lowest first; each may import only those before it (the import-graph test,
``tests/unit/test_import_graph.py``, holds the code to this):

* ``core``: errors, names, limits, settings, specs, profiles, telemetry, records;
* ``ports``: storage, bus and storage-queue interfaces with local and Azure backends;
* ``registry``: one owner per container (versions and aliases, runs, quarantine, datasets);
* ``policies``: promotion and rollout decisions, pure functions of state and evidence;
* ``serving``: the request path (runtime, codecs, inference log, feedback);
* ``context`` (a module): the per-worker composition of ports, stores and the runtime;
* ``pipeline``: validation, training, conversion, registration and promotion stages;
* ``monitoring``: drift, live performance, reports, retraining.

``lineage`` and ``ops`` read across all of them for the runs API, the console and operators.
"""
