"""HTTP ingest benchmark on the local stack (real Kafka, PostgreSQL, worker processes).

Measures, in one run against the workers' ingest endpoint (``POST /v1/camera-events``):
  * camera events per second accepted, each acknowledged by Kafka before the reply, sent as JSON-lines
    batches by several clients at once, and the same for one event per request;
  * p50/p99 time per request;
  * events per second from the first POST until every event is recorded by the pipeline (a sighting).

The per-key rate limit is raised out of the way (its PostgreSQL statement per request is still
paid). Events are captures of registered cars with no open case, as most camera traffic is. Not a
test: it prints figures for the README. Usage:
    ./dev bench ingest [--events 20000] [--batch 100] [--clients 4] [--singles 2000] [--workers 1]
"""

import argparse
import asyncio
import statistics
import sys
import time
from datetime import UTC, datetime

import aiohttp

from bench.e2e import BenchStack, bench_stack, machine, percentile, progress
from pipeline.config import Settings
from pipeline.demo import city
from pipeline.ingest import keys
from schemas import events
from schemas.codec import encode


def captures(stack: BenchStack, plates: list[str], first: int, count: int) -> list[bytes]:
    """``count`` captures (JSON, one per line) of the given plates, event ids numbered from ``first``."""
    lines = []
    for i in range(first, first + count):
        camera = city.CAMERAS[i % len(city.CAMERAS)]
        lines.append(encode(events.VehicleObserved(
            event_id=f"bench-{stack.run}-{i:08d}", camera_id=camera.id, plate=plates[i % len(plates)],
            taken_at=datetime.now(UTC), location=events.Location(lat=camera.lat, lon=camera.lon),
            place=camera.place, zone=camera.zone, evidence=events.Evidence(image_url=f"https://evidence.bench/{i}.jpg"))))
    return lines


async def post_all(bodies: list[bytes], clients: int, key: str, urls: list[str], events_per_body: int,
                   label: str) -> dict:
    """POST every body (spread over ``urls``) with ``clients`` at once; times per request."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    times: list[float] = []
    refused: list[str] = []
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/x-ndjson"}
    started = time.monotonic()

    async def client(n: int) -> None:
        async with aiohttp.ClientSession() as http:
            while not queue.empty():
                body = queue.get_nowait()
                sent = time.monotonic()
                async with http.post(urls[n % len(urls)], data=body, headers=headers) as reply:
                    answer = await reply.text()
                    if reply.status != 202:
                        refused.append(f"{reply.status}: {answer[:200]}")
                times.append((time.monotonic() - sent) * 1000)
                if len(times) % max(1, len(bodies) // 20) == 0:
                    progress(label, len(times) * events_per_body, len(bodies) * events_per_body, started)

    await asyncio.gather(*(client(n) for n in range(clients)))
    elapsed = time.monotonic() - started
    print(file=sys.stderr)
    if refused:
        raise SystemExit(f"bench: {len(refused)} requests refused, e.g. {refused[0]}")
    times.sort()
    return {"requests": len(bodies), "events": len(bodies) * events_per_body, "seconds": elapsed,
            "events_per_second": len(bodies) * events_per_body / elapsed,
            "requests_per_second": len(bodies) / elapsed,
            "p50_ms": statistics.median(times), "p99_ms": percentile(times, 0.99)}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=20000, help="events sent in batches")
    parser.add_argument("--batch", type=int, default=100, help="events per batch request")
    parser.add_argument("--clients", type=int, default=4, help="requests in flight at once")
    parser.add_argument("--singles", type=int, default=2000, help="events sent one per request")
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    base = Settings()
    print(f"machine: {machine()}")
    async with bench_stack(2000, args.workers, base, PW_INGEST_RATE_PER_SECOND="1000000",
                           PW_INGEST_RATE_BURST="1000000") as stack:
        async with stack.pool.acquire() as conn:
            _, key = await keys.add(conn, "bench-cameras")
            for camera in city.CAMERAS:  # an integrator publishes only for its own cameras
                await city.register(conn, camera, "bench-cameras")
        plates = [r["plate"] for r in await stack.pool.fetch("SELECT plate FROM plate_registry")]
        urls = [f"http://127.0.0.1:{6100 + i}/v1/camera-events" for i in range(args.workers)]
        lines = captures(stack, plates, 0, args.events)
        batches = [b"\n".join(lines[i:i + args.batch]) for i in range(0, len(lines), args.batch)]
        singles = captures(stack, plates, args.events, args.singles)
        stack.check_workers()

        first_post = time.monotonic()
        batched = await post_all(batches, args.clients, key, urls, args.batch, "batched events accepted")
        single = await post_all(singles, args.clients, key, urls, 1, "single events accepted")
        total = args.events + args.singles
        while (recorded := await stack.pool.fetchval("SELECT count(*) FROM sightings")) < total:
            progress("events recorded by the pipeline", recorded, total, first_post)
            stack.check_workers()
            if time.monotonic() - first_post > 900:
                raise SystemExit(f"\nbench: only {recorded}/{total} events recorded after 900 s; see {stack.log_dir}")
            await asyncio.sleep(0.5)
        recorded_s = time.monotonic() - first_post
        print(file=sys.stderr)
        memory = stack.memory()

    print(f"HTTP ingest, {args.workers} worker(s), {args.clients} clients at once:")
    print(f"  batches of {args.batch}: {batched['events_per_second']:,.0f} events/s accepted "
          f"({batched['requests_per_second']:,.1f} requests/s; per request p50 {batched['p50_ms']:,.0f} ms, "
          f"p99 {batched['p99_ms']:,.0f} ms; {batched['events']} events in {batched['seconds']:.1f} s)")
    print(f"  one event per request: {single['events_per_second']:,.0f} events/s accepted "
          f"(per request p50 {single['p50_ms']:,.1f} ms, p99 {single['p99_ms']:,.1f} ms; "
          f"{single['events']} events in {single['seconds']:.1f} s)")
    print(f"  first POST -> every event recorded by the pipeline: {total / recorded_s:,.0f} events/s "
          f"({total} events in {recorded_s:.1f} s)")
    print(f"  worker memory (largest): peak {max(m['VmHWM'] for m in memory):.0f} MiB")


if __name__ == "__main__":
    asyncio.run(main())
