"""Bounds on client input: string lengths per field, what errors quote back, log buffer bytes."""
from __future__ import annotations

import time

import numpy as np
import pytest

from shared.core.errors import InvalidRequest, clip
from shared.core.limits import check_string
from shared.ports.storage.local import LocalStorage
from shared.serving.inference_log import InferenceLogger, LogRecord
from shared.serving.protocols.batch import batch_bytes, check_batch_strings
from shared.serving.protocols.native import parse_payload

SCHEMA = (("speed", "float"), ("turbine", "string"))


def batch(turbines: list[str]):
    return parse_payload({"inputs": {"speed": [1.0] * len(turbines), "turbine": turbines}}, SCHEMA, 100)


def test_a_long_string_is_refused_naming_its_field_and_row():
    check_batch_strings(batch(["T1", "x" * 256]), 256)
    with pytest.raises(InvalidRequest) as caught:
        check_batch_strings(batch(["T1", "T2", "x" * 257]), 256)
    assert caught.value.details == {"field": "turbine", "row": 2}
    assert "257 characters, over the limit of 256" in caught.value.message
    with pytest.raises(InvalidRequest) as caught:
        check_string("y" * 300, "feedback[4].label", 256, row=4)
    assert caught.value.details == {"field": "feedback[4].label", "row": 4}


def test_errors_quote_at_most_200_characters_of_client_text():
    assert clip("short") == "short"
    long = clip("k" * 4_000_000)
    assert long.startswith("k" * 200) and len(long) < 250 and "4,000,000 characters" in long
    assert clip({"field": "f" * 1000, "row": 3}) == {"field": clip("f" * 1000), "row": 3}


def test_the_inference_log_buffer_is_bounded_in_bytes_and_counts_what_it_drops(tmp_path):
    logger = InferenceLogger(LocalStorage(tmp_path / "blobs"), flush_seconds=60, max_buffered_bytes=20_000)
    small, big = batch(["T1"]), batch(["x" * 256] * 50)  # ~0.1 KB and ~16 KB of buffer
    assert batch_bytes(big) > 50 * 256 and batch_bytes(small) < 200
    kept = sum(logger.record(LogRecord("m", 1, f"r{i}", time.time(), 0.1, b, np.ones(b.rows), None, None, None))
               for i, b in enumerate([big, small, big, small]))
    assert kept == 3  # the second big batch would pass 20,000 bytes
    stats = logger.stats()
    assert stats["dropped_rows"] == 50 and stats["buffered_bytes"] <= 20_000
    assert logger.flush() == 52 and logger.stats()["buffered_bytes"] == 0
    logger.close()


def test_a_long_reason_is_cut_between_words_and_says_how_long_it_was():
    from shared.core.errors import clip_words

    reason = "the dataset has duplicate column names: " + ", ".join(f"petal_length_{i}" for i in range(60))
    cut = clip_words(reason, 200)
    kept, _, tail = cut.partition("... (")
    assert len(cut) <= 200 and tail == f"{len(reason):,} characters)"
    assert reason.startswith(kept) and reason[len(kept)] in " ,"  # the next character ends a word
    assert clip_words("short and whole", 200) == "short and whole"
    assert clip_words("x" * 500, 100).startswith("x" * 70)  # one long word: cut inside it, still bounded
