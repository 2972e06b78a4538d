"""A counting, optionally slow HTTP proxy on 127.0.0.1 in front of an MLflow tracking server (bench/scheduler_scale.py).

Every request is held `--delay-ms` milliseconds (each on its own, so concurrent requests wait side by side, as behind
a slow network), forwarded to `--target` and counted by method and endpoint (the path; artifacts by their
endpoint, not their own path). `GET /_proxy/counts` answers the counts as
JSON and `POST /_proxy/reset` clears them; neither is forwarded or counted.

    python bench/scale_proxy.py --port 5100 --target http://127.0.0.1:5000 --delay-ms 50
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter

from aiohttp import ClientSession, ClientTimeout, TCPConnector, web

ARTIFACTS = "/mlflow-artifacts/artifacts/"
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "host", "content-length", "content-encoding"}


def endpoint(path: str) -> str:
    """The endpoint a request path calls: an artifact's path ends in `*`."""
    head, found, _ = path.partition(ARTIFACTS)
    return head + ARTIFACTS + "*" if found else path


def make_app(target: str, delay_s: float) -> web.Application:
    """The proxy's aiohttp application."""
    counts: Counter = Counter()
    app = web.Application(client_max_size=1 << 30)

    async def start_session(app: web.Application) -> None:
        app["session"] = ClientSession(connector=TCPConnector(limit=0), timeout=ClientTimeout(total=600),
                                       auto_decompress=False)

    async def close_session(app: web.Application) -> None:
        await app["session"].close()

    async def show_counts(request: web.Request) -> web.Response:
        return web.json_response({f"{method} {path}": n for (method, path), n in counts.items()})

    async def reset(request: web.Request) -> web.Response:
        counts.clear()
        return web.json_response({})

    async def forward(request: web.Request) -> web.StreamResponse:
        counts[(request.method, endpoint(request.path))] += 1
        body = await request.read()
        if delay_s:
            await asyncio.sleep(delay_s)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        async with request.app["session"].request(request.method, target + request.path_qs, headers=headers,
                                                  data=body or None, allow_redirects=False) as answer:
            payload = await answer.read()
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
            if "Content-Encoding" in answer.headers:
                kept["Content-Encoding"] = answer.headers["Content-Encoding"]
            return web.Response(status=answer.status, body=payload, headers=kept)

    app.on_startup.append(start_session)
    app.on_cleanup.append(close_session)
    app.router.add_get("/_proxy/counts", show_counts)
    app.router.add_post("/_proxy/reset", reset)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main() -> None:
    """Serve the proxy until killed."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True, help="port to listen on (127.0.0.1)")
    parser.add_argument("--target", required=True, help="the tracking server, http://127.0.0.1:PORT")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="hold every request this long")
    args = parser.parse_args()
    web.run_app(make_app(args.target.rstrip("/"), args.delay_ms / 1000), host="127.0.0.1", port=args.port,
                print=None, access_log=None)


if __name__ == "__main__":
    main()
