"""A live, readable feed of what the pipeline decides (case events, tickets, SMS), for a terminal."""

import asyncio
import json
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from aiokafka import AIOKafkaConsumer
from rich.console import Console

from pipeline.lookups.owners import mask_phone
from pipeline.sms.kannel import read_fakesmsc_line
from schemas import topics

STYLE = {"CaseOpened": "yellow", "WarningSent": "cyan", "TicketIssued": "bold red", "moved": "green",
         "ticketed": "red", "cautioned": "bold cyan", "to_confirm": "bold yellow", "unconfirmed": "magenta",
         "review": "bold magenta", "exempt": "blue"}


def describe(message: dict, tz: ZoneInfo) -> tuple[str, str]:
    kind = message.get("type")
    plate = message.get("plate", "?")
    if kind == "CaseOpened":
        return f"VIOLATION  {plate} at {message['place']} (case {message['case_id'][:8]}, {message['state']})", STYLE[kind]
    if kind == "WarningSent":
        deadline = datetime.fromisoformat(message["deadline_at"]).astimezone(tz)
        park = f"nearest car park {message['car_park_id']} ({message['free_spaces']} free)" if message["car_park_id"] else "no car park free"
        return f"WARNED     {plate}: move by {deadline:%H:%M:%S}; {park}", STYLE[kind]
    if kind == "WarningDelivered":
        delivered = datetime.fromisoformat(message["delivered_at"]).astimezone(tz)
        deadline = datetime.fromisoformat(message["deadline_at"]).astimezone(tz)
        moved = f"; deadline moved to {deadline:%H:%M:%S}" if message["deadline_moved"] else ""
        return f"DELIVERED  {plate}: on the phone at {delivered:%H:%M:%S}{moved}", STYLE["WarningSent"]
    if kind == "SmsSent":
        accepted = datetime.fromisoformat(message["accepted_at"]).astimezone(tz)
        return f"SMS SENT   {plate}: the {message['kind'].replace('_', ' ')} SMS, taken by the gateway at {accepted:%H:%M:%S}", STYLE["WarningSent"]
    if kind == "TicketIssued":
        return f"TICKET     {plate}: {message['ticket_number']} at {message['place']}", STYLE[kind]
    if kind == "CaseClosed":
        outcome = message["outcome"]
        return f"{outcome.upper():<10} {plate}: {message['reason']}", STYLE.get(outcome, "white")
    return f"{kind} {plate}", "white"


def _sms_lines(path: Path, offset: int, from_smsc: bool) -> tuple[list[tuple[str, str]], int]:
    """New (masked receiver, text) pairs in the handsets file or the fake SMS centre's log."""
    out = []
    with path.open(encoding="utf-8", errors="replace") as f:
        f.seek(offset)
        for line in f:
            if from_smsc:
                got = read_fakesmsc_line(line)
                if got:
                    out.append((mask_phone(got[0]), got[1]))
            else:
                sms = json.loads(line)
                out.append((sms["to"], sms["text"]))
        return out, f.tell()


async def watch(bootstrap: str, prefix: str, sms_file: Path | None, timezone: str, stop: asyncio.Event | None = None,
                console: Console | None = None, from_smsc: bool = False, kafka_options: dict | None = None) -> None:
    """Print case events and tickets from Kafka, and SMS as they reach the handsets file or,
    with ``from_smsc``, Kannel's fake SMS centre (``sms_file`` is then its log)."""
    console = console or Console(highlight=False, soft_wrap=True)
    tz = ZoneInfo(timezone)
    consumer = AIOKafkaConsumer(f"{prefix}{topics.CASE_EVENTS.name}", f"{prefix}{topics.TICKETS.name}",
                                auto_offset_reset="latest", group_id=None,
                                **(kafka_options or {"bootstrap_servers": bootstrap}))
    await consumer.start()
    sms_offset = sms_file.stat().st_size if sms_file and sms_file.exists() else 0
    try:
        while stop is None or not stop.is_set():
            batches = await consumer.getmany(timeout_ms=300)
            for records in batches.values():
                for record in records:
                    text, style = describe(json.loads(record.value), tz)
                    console.print(f"[dim]{datetime.now(tz):%H:%M:%S}[/dim]  [{style}]{text}[/{style}]")
            if sms_file and sms_file.exists() and sms_file.stat().st_size > sms_offset:
                received, sms_offset = _sms_lines(sms_file, sms_offset, from_smsc)
                for to, text in received:
                    console.print(f"[dim]{datetime.now(tz):%H:%M:%S}[/dim]  [bold]SMS → {to}[/bold]  {text}")
    finally:
        await consumer.stop()
