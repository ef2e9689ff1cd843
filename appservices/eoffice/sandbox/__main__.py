"""``python -m appservices.eoffice.sandbox --data-dir DIR --port P --token TOKEN`` runs the reference service.

Prints one ``listening on URL`` line to stdout once the socket is bound (tests and scripts wait for
it) and shuts down cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import ssl
import sys
from typing import Sequence

from aiohttp import web

from .app import build_app
from .config import ConfigError, SandboxConfig, parse_args


async def serve(config: SandboxConfig) -> None:
    runner = web.AppRunner(build_app(config), access_log=None, handle_signals=False)
    await runner.setup()
    ssl_ctx = None
    if config.tls_cert is not None and config.tls_key is not None:
        ssl_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ssl_ctx.load_cert_chain(config.tls_cert, config.tls_key)
    site = web.TCPSite(runner, config.host, config.port, ssl_context=ssl_ctx)
    await site.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    scheme = "https" if ssl_ctx else "http"
    print(f"listening on {scheme}://{config.host}:{config.port}", flush=True)
    if ssl_ctx is None:
        logging.getLogger(__name__).warning("serving plain HTTP: the contract requires HTTPS outside a test bench")
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = parse_args(argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    asyncio.run(serve(config))
    return 0


if __name__ == "__main__":
    sys.exit(main())
