"""The dashboard's web app (aiohttp; updates as server-sent events through aiohttp-sse).

Why aiohttp: one asyncio server for the page, a JSON API and a long-lived event stream,
maintained, already a small wheel on every target; SSE rather than websockets because the
updates flow one way (the actions are ordinary POSTs) and EventSource reconnects by itself.

    GET  /                      the page (index.html: inline JS, canvas plots, no CDN)
    GET  /api/state             the snapshot (JSON)
    GET  /events                the snapshot once a second (text/event-stream)
    POST /api/devices/{i}/apply {"params": {...}, "trial_s": 120, "confirm": false}
    POST /api/devices/{i}/push  {"bundle": "NAME.hlb", "confirm": true}
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from aiohttp import web
from aiohttp_sse import sse_response

from edge.errors import HushlinkError

PAGE = Path(__file__).with_name("index.html")
SOURCE = web.AppKey("source", object)


def make_app(source, period_s: float = 1.0) -> web.Application:
    app = web.Application()
    app[SOURCE] = source

    async def page(request: web.Request) -> web.Response:
        return web.Response(text=PAGE.read_text(), content_type="text/html")

    async def state(request: web.Request) -> web.Response:
        return web.json_response(source.snapshot())

    async def events(request: web.Request) -> web.StreamResponse:
        async with sse_response(request) as resp:
            try:
                while resp.is_connected():
                    await resp.send(json.dumps(source.snapshot(), default=str))
                    await asyncio.sleep(period_s)
            except ConnectionResetError:  # the browser went away: nothing to report
                pass
        return resp

    async def action(request: web.Request, fn) -> web.Response:
        try:
            index = int(request.match_info["index"])
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
        except (ValueError, json.JSONDecodeError) as e:
            return web.json_response({"ok": False, "error": f"bad request: {e}"}, status=400)
        try:  # serial calls block: off the event loop
            out = await asyncio.get_running_loop().run_in_executor(None, fn, index, body)
        except (HushlinkError, ValueError, TypeError, KeyError) as e:
            return web.json_response({"ok": False, "error": str(e)}, status=422)
        return web.json_response({"ok": True, "result": out})

    def do_apply(index: int, body: dict) -> dict:
        params = body.get("params")
        if not isinstance(params, dict) or not params:
            raise ValueError("params: a map of transport parameters, e.g. {\"bitrate_kbps\": 96}")
        return source.apply(index, params, float(body.get("trial_s", 120.0)),
                            bool(body.get("confirm", False)))

    def do_push(index: int, body: dict) -> dict:
        trial = body.get("trial_s")
        return source.push(index, str(body.get("bundle", "")),
                           None if trial is None else float(trial),
                           bool(body.get("confirm", True)))

    async def apply(request):
        return await action(request, do_apply)

    async def push(request):
        return await action(request, do_push)

    app.router.add_get("/", page)
    app.router.add_get("/api/state", state)
    app.router.add_get("/events", events)
    app.router.add_post("/api/devices/{index}/apply", apply)
    app.router.add_post("/api/devices/{index}/push", push)

    async def close(app):
        source.close()

    app.on_cleanup.append(close)
    return app


def serve(source, host: str = "127.0.0.1", port: int = 8765, print_fn=print) -> None:
    """Serve until SIGINT/SIGTERM."""
    web.run_app(make_app(source), host=host, port=port, shutdown_timeout=2.0,
                print=lambda msg: print_fn(f"dashboard on http://{host}:{port}/"),
                handle_signals=True)


class Background:
    """The app served from a thread of its own (tests, scripts): ``.url``, ``.stop()``."""

    def __init__(self, source, host: str = "127.0.0.1", port: int = 0, period_s: float = 1.0):
        import threading

        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(make_app(source, period_s), shutdown_timeout=1.0)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, host, port)
        self.loop.run_until_complete(site.start())
        port = self.runner.addresses[0][1]
        self.url = f"http://{host}:{port}/"
        self._t = threading.Thread(target=self.loop.run_forever, daemon=True)
        self._t.start()

    def stop(self) -> None:
        fut = asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop)
        fut.result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._t.join(5)
        self.loop.close()
