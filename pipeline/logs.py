"""Keeping a worker's log readable through an outage.

While the broker is away, aiokafka and Faust log the same error thousands of times a second
("Failed fetch messages from 1: ..."). ``RepeatFilter`` lets the first record of each kind through
and then at most one every ``every`` seconds, which says how many like it were held back.
"""

import logging
import time
from dataclasses import dataclass

from cachetools import LRUCache


@dataclass
class _Seen:
    passed_at: float
    held_back: int = 0


class RepeatFilter(logging.Filter):
    """Rate-limits repeated records: a record's kind is its logger, its level and its message
    template (``record.msg`` before the arguments are put in), so "Unable connect to %s" counts as
    one kind whatever the address. The first of a kind passes; the next ones pass at most once every
    ``every`` seconds, ending in "[N more like this in the last S s]". Records below ``level`` always
    pass (Faust's INFO lines about assignments are read by people and by the tests). At most ``kinds``
    kinds are remembered (the least recently seen is forgotten)."""

    def __init__(self, every: float = 10.0, level: int = logging.WARNING, kinds: int = 1000, timer=time.monotonic):
        super().__init__()
        self.every = every
        self.level = level
        self.timer = timer
        self._seen: LRUCache = LRUCache(maxsize=kinds)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < self.level:
            return True
        decided = getattr(record, "_repeat_filter_passed", None)
        if decided is None:  # one filter serves several handlers: decide once per record
            decided = record._repeat_filter_passed = self._passes(record)
        return decided

    def _passes(self, record: logging.LogRecord) -> bool:
        kind = (record.name, record.levelno, str(record.msg))
        now = self.timer()
        seen = self._seen.get(kind)
        if seen is None:
            self._seen[kind] = _Seen(now)
            return True
        if now - seen.passed_at < self.every:
            seen.held_back += 1
            return False
        if seen.held_back:
            record.msg = (f"{record.getMessage()} [{seen.held_back} more like this in the last "
                          f"{now - seen.passed_at:.0f} s]")
            record.args = ()
        self._seen[kind] = _Seen(now)
        return True


def quiet_repeats(logger: logging.Logger, every: float = 10.0) -> None:
    """Put one ``RepeatFilter`` on each of the logger's handlers (records from child loggers reach
    handlers, not the parent's own filters). Idempotent."""
    repeats = RepeatFilter(every)
    for handler in logger.handlers:
        if not any(isinstance(f, RepeatFilter) for f in handler.filters):
            handler.addFilter(repeats)


def worker_root_logger(logger: logging.Logger, level: int) -> None:
    """The worker's root logger, after Faust has set it up: at ``level``, with repeats quieted.

    Faust's worker, at a level of WARN or above, hangs its terminal spinner on the root logger and
    lowers the logger to DEBUG, so that every library's debug record is made, to turn the spinner,
    then dropped by the handlers: aiokafka's producer alone makes one per message sent, 6% of a busy
    worker's CPU in the deadlines bench (the outbox relay publishing each decision). The logger goes
    back to ``level``; the spinner turns with the records that pass it."""
    if level:
        logger.setLevel(level)
    quiet_repeats(logger)
