"""The domain core of the MLOps system: ports, stages and the registry.

Nothing in this package imports ``azure.functions``; the trigger adapters in
``functions/`` translate bindings into the typed objects used here.
"""
