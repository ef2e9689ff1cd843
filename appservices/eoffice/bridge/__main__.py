"""``python -m appservices.eoffice.bridge -c bridge.yaml`` runs the bridge;
``--write-registration FILE`` writes the appservice registration Qasid needs and exits."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path

import yaml
from aiohttp import web

from .bridge import Bridge
from .config import BridgeConfigError, load_config
from .eoffice import EOffice
from .matrix import Matrix
from .server import make_app
from .store import BridgeStore


async def serve(config_path: Path) -> None:
    config = load_config(config_path)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    store = BridgeStore(config.data_dir / "bridge.db")
    matrix = Matrix(config)
    eoffice = EOffice(config.eoffice_url, config.eoffice_token)
    bridge = Bridge(config, store, matrix, eoffice)
    # The bot's device and its keys first: once the port is open, officers' clients may already
    # be starting Olm sessions with it.
    await bridge.start()
    runner = web.AppRunner(make_app(bridge), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, config.listen_host, config.listen_port).start()
    try:
        await eoffice.subscribe(f"{config.public_url}/eoffice/webhook", config.webhook_secret)
    except Exception as e:  # noqa: BLE001 - polling still brings everything
        logging.getLogger("eoffice.bridge").warning("could not subscribe to e-Office webhooks (%s); polling only", e)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    logging.getLogger("eoffice.bridge").info("bridge running on %s:%d", config.listen_host, config.listen_port)
    await stop.wait()
    await bridge.stop()
    await runner.cleanup()
    await matrix.close()
    await eoffice.close()
    store.close()


def main() -> int:
    ap = argparse.ArgumentParser(prog="python -m appservices.eoffice.bridge")
    ap.add_argument("-c", "--config", required=True, type=Path)
    ap.add_argument("--write-registration", type=Path, metavar="FILE")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        if args.write_registration:
            args.write_registration.write_text(yaml.safe_dump(load_config(args.config).registration(), sort_keys=False))
            return 0
        asyncio.run(serve(args.config))
    except BridgeConfigError as e:
        sys.stderr.write(f"eoffice-bridge: error: {e}\n")
        return 2
    return 0


sys.exit(main())
