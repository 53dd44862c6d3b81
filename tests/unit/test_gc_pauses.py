"""A started worker's objects are out of the garbage collector's sight (bootstrap.keep_out_of_collections):
a full collection no longer walks them all, which stopped the worker for up to a second while deadlines
came due."""

import gc
import time

import pytest

from pipeline import bootstrap

pytestmark = pytest.mark.unit


@pytest.fixture
def unfrozen():
    yield
    gc.unfreeze()


def full_collection_seconds() -> float:
    started = time.process_time()
    gc.collect()
    return time.process_time() - started


def test_given_a_started_worker_then_a_full_collection_no_longer_walks_its_objects(unfrozen):
    held = [{"case": i, "links": [i]} for i in range(300_000)]  # what a worker keeps from its start
    walking = full_collection_seconds()

    kept = bootstrap.keep_out_of_collections()
    after = full_collection_seconds()

    assert kept >= len(held)
    assert after < walking / 10, f"a full collection took {after:.3f} s, {walking:.3f} s before"
