"""Audit export and offline verification of a large room: `python -m bench audit [--events N]`.

A Qasid (in this process, SQLite in a temporary directory) holds a room with N events — messages from
20 members, with a state change every 100 events — then the room is exported exactly as
`qasid audit export` does, and the export verified as `qasid audit verify` does (in this process, so
the figure is the verifier's own work, not Python's start-up). Reported: export time, file size,
verification time and events verified per second.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from homeserver.app import start_homeserver
from homeserver.audit.verify import verify_export
from tests.support.servers import make_config


async def build_and_export(events: int, work: Path) -> dict[str, Any]:
    config = make_config(f"sqlite:///{work / 'hs.db'}", work / "data")
    hs, _ = await start_homeserver(config)
    # No clean-up: the process ends right after, and background tasks hold the database until then.
    creator = "@alice:" + config.server_name
    async with hs.storage.db.transaction() as conn:
        await hs.accounts.create_user(conn, "alice", None)
    room_id = await hs.room_creation.create_room(creator, {"preset": "public_chat", "name": "Audit bench"})
    members = [f"@m{i}:{config.server_name}" for i in range(20)]
    for m in members:
        await hs.event_creator.send(room_id, m, "m.room.member", {"membership": "join"}, state_key=m)
    t0 = time.perf_counter()
    for i in range(events):
        if i % 100 == 99:
            await hs.event_creator.send(room_id, creator, "m.room.topic", {"topic": f"topic {i}"}, state_key="")
        else:
            await hs.event_creator.send(room_id, members[i % 20], "m.room.message", {"msgtype": "m.text", "body": f"message {i}"})
    built = time.perf_counter() - t0
    out = work / "room.audit.jsonl"
    t1 = time.perf_counter()
    with open(out, "w", encoding="utf-8") as f:
        async for line in hs.audit.lines(room_id):
            f.write(line)
    exported = time.perf_counter() - t1
    return {"room_id": room_id, "build_s": round(built, 1), "export_s": round(exported, 2), "file": str(out),
            "file_mib": round(out.stat().st_size / 2**20, 1)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench audit")
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qasid-audit-bench-") as tmp:
        r = asyncio.run(build_and_export(args.events, Path(tmp)))
        text = Path(r["file"]).read_text(encoding="utf-8")
        t0 = time.perf_counter()
        report = verify_export(io.StringIO(text))
        seconds = time.perf_counter() - t0
    r.update({"events": report.events, "verify_s": round(seconds, 2), "events_per_s": round(report.events / seconds),
              "clean": report.ok})
    r.pop("file")
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"\nAudit: a room of {r['events']} events ({r['file_mib']} MiB export)")
    print(f"  export  {r['export_s']:>8} s")
    print(f"  verify  {r['verify_s']:>8} s   ({r['events_per_s']} events/s, {'clean' if r['clean'] else 'FAILURES'})")
