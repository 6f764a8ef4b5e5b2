"""Build and release tools: the two function-app packages (``python -m tools.package``)."""
