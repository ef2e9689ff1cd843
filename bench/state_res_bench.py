"""State resolution at scale: a room of 5,000 members with three conflicting forks of 500 events each.

Reports wall time and peak Python memory of one resolve_state call (tracemalloc), for room versions
10 (state res v2) and 12 (v2.1). Run: ``python -m bench state-res`` (``--members``/``--fork`` to scale).
"""

from __future__ import annotations

import argparse
import random
import time
import tracemalloc
from typing import Any

from homeserver.events import resolve_state
from tests.events.builder import ALICE, RoomBuilder


def build_room(version: str, members: int, fork_len: int, forks: int = 3, seed: int = 1) -> tuple[RoomBuilder, list[dict]]:
    rng = random.Random(seed)
    rb = RoomBuilder(version).standard("public", users={f"@mod{i}:m.test": 50 for i in range(5)})
    users = [f"@user{i}:u{i % 50}.test" for i in range(members)] + [f"@mod{i}:m.test" for i in range(5)]
    for u in users:
        rb.add("m.room.member", u, {"membership": "join"}, u)
    base_state, base_head = dict(rb.state), list(rb.head)
    fork_states = []
    for f in range(forks):
        rb.state, rb.head = dict(base_state), list(base_head)
        for i in range(fork_len):
            roll = rng.random()
            if roll < 0.6:
                u = rng.choice(users)
                rb.add("m.room.member", u, {"membership": "join", "displayname": f"fork{f}-{i}"}, u)
            elif roll < 0.8:
                rb.add("m.room.topic", ALICE, {"topic": f"fork {f} topic {i}"}, "")
            elif roll < 0.9:
                mod = f"@mod{rng.randrange(5)}:m.test"
                target = rng.choice(users[:members])
                rb.add("m.room.member", mod, {"membership": "ban"}, target)
            else:
                pl = dict(rb.events[rb.state[("m.room.power_levels", "")]]["content"])
                pl["users"] = {**pl["users"], rng.choice(users[:members]): rng.choice([0, 10, 20])}
                rb.add("m.room.power_levels", ALICE, pl, "")
        fork_states.append(dict(rb.state))
    return rb, fork_states


def run(version: str, members: int, fork_len: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    rb, states = build_room(version, members, fork_len)
    built = time.perf_counter() - t0
    tracemalloc.start()
    t1 = time.perf_counter()
    resolved = resolve_state(version, states, rb.events)
    elapsed = time.perf_counter() - t1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return {"room_version": version, "members": members, "fork_events": fork_len, "events": len(rb.events),
            "state_entries": len(resolved), "build_s": round(built, 2), "resolve_s": round(elapsed, 3),
            "peak_mib": round(peak / 2**20, 1)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench state-res")
    ap.add_argument("--members", type=int, default=5000)
    ap.add_argument("--fork", type=int, default=500)
    args = ap.parse_args(argv)
    print(f"{'version':>8} {'events':>7} {'state':>6} {'resolve s':>10} {'peak MiB':>9}")
    for version in ("10", "12"):
        r = run(version, args.members, args.fork)
        print(f"{r['room_version']:>8} {r['events']:>7} {r['state_entries']:>6} {r['resolve_s']:>10} {r['peak_mib']:>9}")


if __name__ == "__main__":
    main()
