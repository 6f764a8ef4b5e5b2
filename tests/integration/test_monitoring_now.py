"""A monitor run just after traffic judges that traffic once it is flushed, and rows a server
flushed late are judged by the next run, once."""
from __future__ import annotations

import time

from models.wind_power_data import generate as wind
from shared.monitoring.monitor import monitor_model
from tests.conftest import to_parquet
from tests.helpers import drain, drop
from tests.integration.test_monitoring import serve


def test_a_run_right_after_flushed_traffic_judges_it_and_late_rows_come_once(ctx):
    drop(ctx, "wind_power", "summer.parquet", to_parquet(wind(3000, seed=1)))
    drain(ctx)
    serve(ctx, wind(300, seed=2), "now", time.time())  # logged and flushed this instant
    first = monitor_model(ctx, "wind_power")  # no wait: the window ends at the run
    assert first["rows"] == 300 and first["verdict"] == "ok" and first["late_rows"] == 0

    # A server that flushed late: rows from before the first run's end, written after it.
    serve(ctx, wind(200, seed=3), "late", first["window"]["to"] - 2)
    serve(ctx, wind(150, seed=4), "fresh", time.time())
    second = monitor_model(ctx, "wind_power")
    assert second["rows"] == 350 and second["late_rows"] == 200  # the first 300 are not judged again
    assert second["window"]["from"] == first["window"]["to"]

    serve(ctx, wind(120, seed=5), "third", time.time())
    third = monitor_model(ctx, "wind_power")
    assert third["rows"] == 120 and third["late_rows"] == 0
