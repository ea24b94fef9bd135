"""Garbage-collector settings for a serving process, applied once start-up is done.

Each request allocates thousands of short-lived container objects. With Python's
default young-generation threshold (700) a collection runs every few requests
and keeps traversing the objects of requests still in flight, promoting them to
older generations, whose collections then traverse everything the gateway built
at start-up (config, routes, price table, tokenizer tables). Two changes remove
most of that work: ``gc.freeze()`` after start-up moves what exists then out of
the collector's sight for good (it lives as long as the process anyway), and a
larger young threshold lets almost every request's objects die by reference
count before a collection ever looks at them. Cycles are still collected.
"""

from __future__ import annotations

import gc

PYTHON_DEFAULT_YOUNG = 700


def tune_gc(young_threshold: int) -> None:
    """Freeze what start-up built and set the young-generation threshold (0 = Python's default)."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold or PYTHON_DEFAULT_YOUNG, older, oldest)
