"""Monitoring: drift statistics, the periodic monitor over the inference log and feedback,
reports and their HTML pages, and retraining requests.

May import: everything in ``shared`` below it (``core``, ``ports``, ``registry``, ``serving``,
``policies``, ``context``, ``pipeline``).
"""
