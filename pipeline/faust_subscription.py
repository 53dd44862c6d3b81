"""The one place parkwarden reaches past Faust's public API: reading more topics through a channel
an agent already reads (the camera events of an integrator registered while the worker runs).

Faust has no public call for it. Its conductor (``app.topics``, a set of channels) is public, and
so are ``discard``/``add``, which make it subscribe again; how long it waits before it does
(``Conductor._resubscribe_sleep_lock_seconds``, 45 s) is not. tests/unit/test_faust_subscription.py
fails if a Faust upgrade changes what this relies on.
"""

from collections.abc import Iterable

RESUBSCRIBE_WAIT_SECONDS = 1.0
"""How long the conductor waits after a change before it subscribes again (Faust's own: 45 s)."""


def read_topics(app, channel, first_topic: str, names: Iterable[str]) -> None:
    """Have every channel that reads ``first_topic`` (``channel`` and the copies Faust cloned of it
    for its agents) read ``names`` instead, and the consumer subscribe to them soon."""
    conductor = app.topics
    if not hasattr(type(conductor), "_resubscribe_sleep_lock_seconds"):
        raise RuntimeError("faust's Conductor no longer has _resubscribe_sleep_lock_seconds: "
                           "see pipeline/faust_subscription.py")
    conductor._resubscribe_sleep_lock_seconds = RESUBSCRIBE_WAIT_SECONDS
    names = list(names)
    for reader in {channel, *(c for c in list(conductor) if first_topic in c.topics)}:
        known = reader in conductor
        if known:
            conductor.discard(reader)  # flags the change: the conductor subscribes again
        reader.topics = names
        if known:
            conductor.add(reader)
