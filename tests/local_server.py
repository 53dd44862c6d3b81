"""A small HTTP server on 127.0.0.1 for tests that play an outside system at a port's edge
(an SMS provider, Kannel's sendsms, a lossy link). Subclasses add their routes."""

import socket

from aiohttp import web


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LocalServer:
    def __init__(self):
        self.port = free_port()

    def add_routes(self, router: web.UrlDispatcher) -> None:
        raise NotImplementedError

    async def __aenter__(self):
        app = web.Application()
        self.add_routes(app.router)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc):
        await self.runner.cleanup()
