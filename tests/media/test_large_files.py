"""A 200 MB file goes up and comes back down through a Qasid running as its own process, while the
server's memory (read from /proc) stays flat: uploads stream to disk, downloads stream from it."""

from __future__ import annotations

import hashlib
import os
import ssl
from pathlib import Path
from typing import AsyncIterator

import aiohttp

from tests.support.processes import QasidProcess, free_port
from tests.support.tls import LocalCA

SIZE = 200 * 1024 * 1024
BLOCK = os.urandom(1024 * 1024)


def _memory_kib(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


async def test_200_mb_round_trip_with_bounded_server_memory(tmp_path: Path) -> None:
    ca = LocalCA(tmp_path / "ca")
    port = free_port()
    server = QasidProcess(f"127.0.0.1:{port}", "127.0.0.1", port, tmp_path / "hs")
    server.write_config(ca, [server], {"max_upload_size": "300M", "media_quota_per_user": None, "log_level": "WARNING"})
    tls = ssl.create_default_context(cafile=str(ca.ca_file))
    await server.start(tls)
    try:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=tls)) as s:
            _, token = await server.register(s, "alice")
            auth = {"Authorization": f"Bearer {token}"}
            # Warm up (imports, pools, caches) so the baseline is the server at work, not at birth.
            async with s.post(f"{server.base_url}/_matrix/media/v3/upload", data=b"warm" * 1000,
                              headers={**auth, "Content-Type": "application/octet-stream"}) as r:
                warm = (await r.json())["content_uri"]
            async with s.get(f"{server.base_url}/_matrix/client/v1/media/download/{warm[6:]}", headers=auth) as r:
                await r.read()
            assert server.proc is not None
            before = _memory_kib(server.proc.pid)["VmRSS"]

            sent = hashlib.sha256()

            async def body() -> AsyncIterator[bytes]:
                for i in range(SIZE // len(BLOCK)):
                    chunk = i.to_bytes(8, "big") + BLOCK[8:]
                    sent.update(chunk)
                    yield chunk

            async with s.post(f"{server.base_url}/_matrix/media/v3/upload", data=body(),
                              headers={**auth, "Content-Type": "application/octet-stream"},
                              params={"filename": "archive.bin"}) as r:
                assert r.status == 200, await r.text()
                mxc = (await r.json())["content_uri"]
            received = hashlib.sha256()
            total = 0
            async with s.get(f"{server.base_url}/_matrix/client/v1/media/download/{mxc[6:]}", headers=auth) as r:
                assert r.status == 200
                assert r.headers["Content-Disposition"] == 'attachment; filename="archive.bin"'
                async for chunk in r.content.iter_chunked(1024 * 1024):
                    received.update(chunk)
                    total += len(chunk)
            assert total == SIZE and received.hexdigest() == sent.hexdigest()
            after = _memory_kib(server.proc.pid)
            growth_mib = (after["VmHWM"] - before) / 1024
            print(f"RSS before {before / 1024:.1f} MiB, peak after {after['VmHWM'] / 1024:.1f} MiB")
            assert growth_mib < 50, f"server memory grew {growth_mib:.1f} MiB for a 200 MiB file"
            stored = list((tmp_path / "hs" / "media_store").rglob(sent.hexdigest()))
            assert len(stored) == 1 and stored[0].stat().st_size == SIZE  # named by its own hash
    finally:
        server.stop()
