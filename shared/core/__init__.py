"""The small common pieces every layer uses: errors, names, limits, settings, specs, profiles,
telemetry, fault injection, and the typed records.

May import: nothing else of ``shared`` (the standard library and numpy only at import time).
"""
