"""The SMS gateway port, and an adapter a person can watch (one JSON line per message in a file).

Contract of ``SmsGateway.send``: returns an ``Accepted`` when the gateway has taken the message
(the warning's window starts then); raises ``TemporaryFailure`` when it is worth trying again
later and the gateway surely did not take it (gateway down, throttled), ``PermanentFailure`` when
it is not worth trying again (number refused), and ``InDoubt`` when the request reached the gateway
but its answer did not reach us (a timeout after sending, for a gateway with no idempotency key).
The message id is ours and stable across retries: adapters pass it on (in a delivery-report URL or
as an idempotency key). Delivery reports arrive later, asynchronously, keyed by that id; for a
message in doubt they are what shows that the gateway took it.
"""

import asyncio
import fcntl
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol
from uuid import UUID

from pipeline.lookups.owners import mask_phone


@dataclass(frozen=True)
class OutgoingSms:
    id: UUID
    phone: str
    text: str

    def __repr__(self) -> str:  # never show the phone number
        return f"OutgoingSms(id={self.id}, phone={mask_phone(self.phone)}, text={self.text!r})"


@dataclass(frozen=True)
class Accepted:
    at: datetime
    gateway_ref: str


class TemporaryFailure(Exception):
    """The gateway could not take the message now; try again later."""


class PermanentFailure(Exception):
    """The gateway will never take this message (e.g. invalid number)."""


class InDoubt(Exception):
    """The gateway may have taken the message: settle it from delivery reports, not by resending now."""


class SmsGateway(Protocol):
    async def send(self, sms: OutgoingSms) -> Accepted: ...

    async def close(self) -> None: ...


class FileGateway:
    """Appends each accepted message as one JSON line (phone masked) to a file: ``tail -f`` it.

    Stands in for handsets in the demo and in tests of the pipeline's guarantees. Sending a
    message id that is already in the file appends nothing (idempotent, also across worker
    processes: the file is locked while it is read and appended).
    """

    def __init__(self, path: Path):
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.touch(exist_ok=True)
        self._lock = asyncio.Lock()
        self._accepted: dict[str, Accepted] = {}
        self._read_to = 0

    def _catch_up(self, f) -> None:
        f.seek(self._read_to)
        for line in f:
            try:
                row = json.loads(line)
                self._accepted[row["id"]] = Accepted(datetime.fromisoformat(row["accepted_at"]), row["id"])
            except (ValueError, KeyError):
                continue
        self._read_to = f.tell()

    def _append_once(self, sms: OutgoingSms) -> Accepted:
        with self.path.open("a+", encoding="utf-8") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                self._catch_up(f)
                key = str(sms.id)
                if key not in self._accepted:
                    accepted = Accepted(datetime.now(UTC), key)
                    row = {"id": key, "to": mask_phone(sms.phone), "text": sms.text, "accepted_at": accepted.at.isoformat()}
                    f.write(json.dumps(row, ensure_ascii=False) + "\n")
                    f.flush()
                    self._read_to = f.tell()
                    self._accepted[key] = accepted
                return self._accepted[key]
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    async def send(self, sms: OutgoingSms) -> Accepted:
        async with self._lock:
            return self._append_once(sms)

    async def close(self) -> None:
        return None
