"""parkwarden's command line: set up, load the demo city, run workers, simulate cameras, watch."""

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path

from importlib import import_module

import click

from pipeline.config import ROOT, Settings

DEMO_EVIDENCE_PORT = 6443

LAZY_COMMANDS = {
    "operators": "pipeline.console.cli:operators",
    "status": "pipeline.console.cli:status",
    "case": "pipeline.console.cli:case_command",
    "outbox": "pipeline.console.cli:outbox",
    "events": "pipeline.ingest.cli:events",
    "integrators": "pipeline.ingest.cli:integrators",
    "consumers": "pipeline.ingest.cli:consumers",
    "dead-letters": "pipeline.ingest.cli:dead_letters",
    "schemas": "pipeline.ingest.cli:schemas_command",
    "tickets": "pipeline.tickets.cli:tickets",
    "cameras": "pipeline.cameras.cli:cameras",
    "data": "pipeline.data.cli:data",
    "retention": "pipeline.retention.cli:retention",
    "reference": "pipeline.reference.cli:reference",
    "zones": "pipeline.lookups.zones_cli:zones",
    "backup": "pipeline.restore_cli:backup",
    "after-restore": "pipeline.restore_cli:after_restore",
}
"""The commands whose module is imported only when they run (or when --help lists them): a command
starts without importing every other command's libraries."""


class LazyGroup(click.Group):
    """A click group that imports a sub-command's module when the command is looked up
    (click's "Lazily Loading Subcommands")."""

    def __init__(self, *args, lazy: dict[str, str], **kwargs):
        super().__init__(*args, **kwargs)
        self.lazy = lazy

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.lazy:
            return super().get_command(ctx, name)
        module, attribute = self.lazy[name].split(":")
        return getattr(import_module(module), attribute)


def run(coro):
    return asyncio.run(coro)


@click.group(cls=LazyGroup, lazy=LAZY_COMMANDS)
def main() -> None:
    """parkwarden: warn the owner of an illegally parked car, then ticket it if it stays."""


@main.command()
def setup() -> None:
    """Apply database migrations and create the Kafka topics (idempotent)."""
    from pipeline import bootstrap

    settings = Settings()
    applied = run(bootstrap.prepare_database(settings))
    click.echo(f"database: {'applied ' + ', '.join(applied) if applied else 'up to date'}")
    created = run(bootstrap.create_topics(settings, run(_integrator_names(settings))))
    click.echo(f"kafka: {'created ' + ', '.join(created) if created else 'topics exist'}")


async def _integrator_names(settings: Settings) -> list[str]:
    """Every integrator (each has its own camera-events topic)."""
    from pipeline import bootstrap
    from pipeline.cameras import registry

    pool = await bootstrap.connect_database(settings)
    try:
        async with pool.acquire() as conn:
            return await registry.integrator_names(conn)
    finally:
        await pool.close()


@main.command("load-demo")
@click.option("--plates", type=int, default=None,
              help="Plates to load: the first N of the demo files (default: all 2,000); beyond them, more are "
                   "generated from the same seed.")
def load_demo(plates: int | None) -> None:
    """Load the demo city (Yuhang, Hangzhou) from its files (pipeline/demo/data/), with the same import as
    `parkwarden data import`: zones, car parks, cameras, plate and contact registries."""
    from pipeline import bootstrap
    from pipeline.demo import city

    async def load():
        pool = await bootstrap.connect_database(Settings())
        try:
            async with pool.acquire() as conn:
                return await city.load(conn, plates)
        finally:
            await pool.close()

    counts = run(load())
    click.echo("demo city loaded: " + ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items()))


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.pass_context
def worker(ctx) -> None:
    """Run a Faust worker (extra options go to `faust worker`, e.g. --web-port 6067)."""
    from pipeline.app import app

    sys.argv = ["parkwarden", "worker", "--loglevel", os.environ.get("PW_LOG_LEVEL", "info"), *ctx.args]
    app.main()


@main.command()
@click.option("--duration", default=120.0, show_default=True,
              help="Seconds during which cars arrive; then the parked ones leave in their time.")
@click.option("--cars", default=50, show_default=True, help="At most this many cars park illegally.")
@click.option("--cars-per-minute", default=12.0, show_default=True)
@click.option("--patrol", default=10.0, show_default=True, help="Seconds between sightings of a parked car.")
@click.option("--duplicates", default=0.05, show_default=True, help="Share of events sent twice.")
@click.option("--malformed", default=0.02, show_default=True, help="Chance per second of a malformed event.")
@click.option("--late", default=0.02, show_default=True, help="Share of camera events sent late (--late-by).")
@click.option("--late-by", default=3.0, show_default=True, help="Seconds a late event is held back.")
@click.option("--out-of-order", default=0.02, show_default=True,
              help="Share of camera events sent after the same car's next event.")
@click.option("--seed", default=1, show_default=True)
def simulate(duration, cars, cars_per_minute, patrol, duplicates, malformed, late, late_by, out_of_order,
             seed) -> None:
    """Simulate cameras and car parks publishing to Kafka."""
    from pipeline.demo.simulator import Simulator

    s = Settings()
    from pipeline.bootstrap import kafka_client_options

    sim = Simulator(s.kafka_bootstrap, s.topic_prefix, s.window_seconds, kafka_options=kafka_client_options(s),
                    cars_per_minute=cars_per_minute,
                    max_cars=cars, duration_seconds=duration, patrol_seconds=patrol, duplicate_rate=duplicates,
                    malformed_rate=malformed, late_rate=late, late_by_seconds=late_by,
                    out_of_order_rate=out_of_order, seed=seed, evidence_url=s.demo_evidence_url)
    run(sim.run(progress=lambda line: click.echo(line, err=True)))


@main.command("evidence-server")
@click.option("--port", default=6443, show_default=True)
@click.option("--tls-dir", type=click.Path(), required=True, help="Where the demo CA and the server's certificate are (made if missing).")
def evidence_server(port: int, tls_dir: str) -> None:
    """The demo's camera image server over HTTPS (pipeline/demo/photos.py), until Ctrl-C."""
    from pipeline.demo import photos

    tls = photos.demo_tls(Path(tls_dir))

    async def serve_forever():
        runner = await photos.serve(tls, "127.0.0.1", port)
        try:
            await asyncio.Event().wait()
        finally:
            await runner.cleanup()
    try:
        run(serve_forever())
    except KeyboardInterrupt:
        pass


@main.command()
def watch() -> None:
    """Print what the pipeline decides, live: violations, warnings (with the SMS text), tickets."""
    from pipeline.watch import watch as watch_feed

    s = Settings()
    from_smsc = s.sms_gateway == "kannel"
    sms_source = s.sms_file.parent.parent / "log" / "fakesmsc.log" if from_smsc else s.sms_file
    try:
        from pipeline.bootstrap import kafka_client_options

        run(watch_feed(s.kafka_bootstrap, s.topic_prefix, sms_source, s.timezone, from_smsc=from_smsc,
                       kafka_options=kafka_client_options(s)))
    except KeyboardInterrupt:
        pass


def demo_environment(environ) -> dict[str, str]:
    """The demo workers' environment: ``environ`` with the demo's short windows, a fresh report key and
    the driver page on (SMS links to http://<web host>:6066/d/<code>), unless ``environ`` says otherwise."""
    env = {**environ, "PW_WINDOW_SECONDS": environ.get("PW_WINDOW_SECONDS", "30"),
           "PW_LATENESS_SECONDS": "2", "PW_RECHECK_WAIT_SECONDS": "8", "PW_LOG_LEVEL": "warn",
           # A fresh key per demo run, shared by its workers, that signs Kannel's delivery-report URLs.
           "PW_SMS_REPORT_SECRET": environ.get("PW_SMS_REPORT_SECRET") or secrets.token_urlsafe(32),
           # The driver page on, so that a newcomer sees the SMS's link and the page it opens.
           "PW_DRIVER_PAGE": environ.get("PW_DRIVER_PAGE", "true")}
    env.setdefault("PW_PUBLIC_BASE_URL", f"http://{environ.get('PW_WEB_HOST', '127.0.0.1')}:6066")
    # Captures point at the demo's image server (HTTPS, the demo's own CA), which the workers trust and fetch from.
    from pipeline.demo.city import INTEGRATOR

    tls_dir = ROOT / "var" / "demo-tls"
    env.setdefault("PW_DEMO_EVIDENCE_URL", f"https://localhost:{DEMO_EVIDENCE_PORT}")
    env.setdefault("PW_EVIDENCE_CA_FILE", str(tls_dir / "demo-ca.pem"))
    env.setdefault("PW_EVIDENCE_HOSTS", f"{INTEGRATOR}=localhost")
    return env


@main.command()
@click.option("--duration", default=150.0, show_default=True, help="Seconds during which cars arrive (then the parked ones leave in their time).")
@click.option("--workers", default=2, show_default=True)
def demo(duration: float, workers: int) -> None:
    """Demo: workers + camera simulator + live feed, with a 30-second window. Ctrl-C stops it all."""
    from pipeline.demo import photos

    env = demo_environment(os.environ)
    photos.make_ca(Path(env["PW_EVIDENCE_CA_FILE"]).parent)  # before the workers, which trust it
    settings = Settings(**{"window_seconds": float(env["PW_WINDOW_SECONDS"])})
    log_dir = settings.sms_file.parent.parent / "log"
    log_dir.mkdir(parents=True, exist_ok=True)
    exe = [sys.executable, "-m", "pipeline"]
    procs: list[subprocess.Popen] = []
    for stop_signal in (signal.SIGTERM, signal.SIGHUP):  # like Ctrl-C: stop the workers we started
        signal.signal(stop_signal, _interrupt)
    try:
        for i in range(workers):
            log = open(log_dir / f"demo-worker-{i + 1}.log", "a")
            procs.append(subprocess.Popen([*exe, "worker"], env={**env, "PW_WEB_PORT": str(6066 + i)},
                                          stdout=log, stderr=subprocess.STDOUT))
        click.echo(f"started {workers} workers (logs in {log_dir}/demo-worker-*.log); SMS land in {settings.sms_file}")
        name, password = run(_demo_operator(settings))
        click.echo(f"console: http://{settings.web_host}:6066/console/  (log in as {name} / {password}, a supervisor)")
        if env["PW_DRIVER_PAGE"].lower() == "true":
            click.echo(f"driver page: {env['PW_PUBLIC_BASE_URL']}/d  (each warning and ticket SMS links to its case)")
        procs.append(subprocess.Popen([*exe, "evidence-server", "--port", str(DEMO_EVIDENCE_PORT), "--tls-dir",
                                       str(Path(env["PW_EVIDENCE_CA_FILE"]).parent)], env=env))
        click.echo(f"camera images: {env['PW_DEMO_EVIDENCE_URL']} (demo CA {env['PW_EVIDENCE_CA_FILE']})")
        click.echo("waiting for the workers to join the consumer group...")
        time.sleep(8)
        procs.append(subprocess.Popen([*exe, "simulate", "--duration", str(duration), "--cars-per-minute", "15"],
                                      env=env))
        click.echo("simulator started; live feed below (Ctrl-C to stop everything)\n")
        watcher = subprocess.Popen([*exe, "watch"], env=env)
        procs.append(watcher)
        procs[-2].wait()
        time.sleep(15)
        click.echo(f"\nsimulator finished; workers and the console stay up until Ctrl-C: "
                   f"http://{settings.web_host}:6066/console/")
        procs[0].wait()
    except KeyboardInterrupt:
        pass
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
        click.echo("demo stopped. Services keep running: scripts/services.sh stop")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


async def _demo_operator(settings: Settings) -> tuple[str, str]:
    from pipeline import bootstrap
    from pipeline.console import cli as console_cli

    await bootstrap.prepare_database(settings)
    pool = await bootstrap.connect_database(settings)
    try:
        async with pool.acquire() as conn:
            return await console_cli.ensure_demo_operator(conn)
    finally:
        await pool.close()

