"""The stores above the storage port, one owner per container: model versions, aliases and
the audit (``store``), runs and their status (``runs``), refused datasets (``quarantine``),
dropped datasets (``datasets``), and JSON blobs with ETag conditions (``jsonio``).

May import: ``shared.core``, ``shared.ports``.
"""
