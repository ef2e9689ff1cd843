"""Qasid against Synapse: the same client load against each, on loopback, in one run.

``python -m bench servers [--quick] [--only qasid|synapse] [--scenarios a,b] [--keep-data]``

Synapse runs first (installed into bench/.work/synapse-venv on first use), then Qasid; both use SQLite and
rate limits raised out of the way. Prints one table (Qasid, Synapse, Qasid/Synapse) and writes every figure,
plus any failed request with the server's answer, to bench/.work/results.json. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from bench import servers_setup as setup
from bench.servers_load import SCENARIOS, Params, run_all

RESULTS = setup.WORK / "results.json"


def rows(p: Params) -> list[dict[str, Any]]:
    """The table: which result field of which scenario, how it is labelled and which direction is better."""
    return [
        {"scenario": "register_login", "field": "value", "label": f"1. register + login ({p.users} users)",
         "unit": "users/s", "better": "higher", "note": "password hashing dominates; not a target"},
        {"scenario": "create_room", "field": "value", "label": f"2. createRoom x{p.rooms}, one user",
         "unit": "rooms/s", "better": "higher"},
        {"scenario": "send_throughput", "field": "value",
         "label": f"3. send, {p.senders} senders x {p.messages_each}", "unit": "events/s", "better": "higher"},
        {"scenario": "sync_latency", "field": "p50_ms", "label": "4. send -> /sync delivery p50",
         "unit": "ms", "better": "lower"},
        {"scenario": "sync_latency", "field": "p95_ms", "label": "4. send -> /sync delivery p95",
         "unit": "ms", "better": "lower"},
        {"scenario": "initial_sync", "field": "value",
         "label": f"5. initial sync, {p.sync_rooms} rooms (median)", "unit": "ms", "better": "lower"},
        {"scenario": "join", "field": "value", "label": f"6. {p.joiners} joins, {p.join_concurrency} at a time",
         "unit": "joins/s", "better": "higher"},
        {"scenario": "rss", "field": "VmRSS", "label": "7. server RSS after the run", "unit": "MB",
         "better": "lower"},
        {"scenario": "rss", "field": "VmHWM", "label": "   server peak RSS (VmHWM)", "unit": "MB",
         "better": "lower"},
        {"scenario": "sliding_sync", "field": "first_ms",
         "label": f"8. sliding sync first request ({p.sliding_rooms} rooms)", "unit": "ms", "better": "lower"},
        {"scenario": "sliding_sync", "field": "p50_ms", "label": "8. send -> sliding sync delivery p50",
         "unit": "ms", "better": "lower"},
    ]


def machine() -> dict[str, Any]:
    info: dict[str, Any] = {"nproc": len(os.sched_getaffinity(0)), "python": platform.python_version(),
                            "platform": platform.platform()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                info["memory_gib"] = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return info


def loadavg() -> list[float]:
    """1-, 5- and 15-minute load averages: other work on the machine skews every figure."""
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return []


def run_server(name: str, p: Params, only: set[str] | None, keep: bool) -> dict[str, Any]:
    print(f"\n== {name}: starting", flush=True)
    t0 = time.perf_counter()
    try:
        server = setup.start_synapse() if name == "synapse" else setup.start_qasid()
    except setup.SetupError as e:
        print(f"== {name}: could not start\n{e}", file=sys.stderr, flush=True)
        return {"version": None, "start_error": str(e), "results": {}, "errors": {}}
    print(f"== {name} {server.version}: pid {server.pid}, {server.base_url}, data in {server.data_dir} "
          f"(up in {time.perf_counter() - t0:.1f} s)", flush=True)
    out: dict[str, Any] = {"version": server.version, "loadavg_before": loadavg()}
    try:
        run = asyncio.run(run_all(server.base_url, server.secret, p, only, log=lambda s: print(s, flush=True)))
        out["loadavg_after"] = loadavg()
        alive = server.proc.poll() is None
        if alive:
            run.results["rss"] = setup.rss_mb(server.pid)
            print(f"  rss: {run.results['rss']}", flush=True)
        else:
            run.errors["rss"] = [{"error": f"{name} exited during the run with status {server.proc.returncode}"}]
        out.update(results=run.results, errors=run.errors)
        if run.errors or not alive:
            out["log_tail"] = server.log_tails(60)
    finally:
        server.stop()
        if keep or out.get("errors"):
            print(f"== {name}: stopped; data and logs kept in {server.data_dir}", flush=True)
            out["data_dir"] = str(server.data_dir)
        else:
            setup.remove_data(server)
            print(f"== {name}: stopped", flush=True)
    return out


def _fmt(v: float | None, ran: bool = True) -> str:
    if v is None:
        return "FAILED" if ran else "-"
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.1f}" if abs(v) >= 10 else f"{v:.2f}"


def compare(table: list[dict[str, Any]], servers: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for row in table:
        vals = {}
        for name in ("qasid", "synapse"):
            res = servers.get(name, {}).get("results", {}).get(row["scenario"])
            vals[name] = None if res is None else res.get(row["field"])
        q, s = vals["qasid"], vals["synapse"]
        ratio = q / s if q is not None and s else None
        verdict = ""
        if ratio is not None and q:
            good = ratio >= 1 if row["better"] == "higher" else ratio <= 1
            factor = ratio if ratio >= 1 else 1 / ratio
            verdict = "same" if abs(factor - 1) < 0.05 else f"Qasid {factor:.1f}x {'better' if good else 'worse'}"
        out.append({**row, "qasid": q, "synapse": s, "ratio_qasid_over_synapse": ratio, "verdict": verdict})
    return out


def print_table(cmp: list[dict[str, Any]], servers: dict[str, dict[str, Any]]) -> None:
    head = f"{'scenario':<40} {'unit':<9} {'better':<7} {'Qasid':>9} {'Synapse':>9} {'Q/S':>6}  verdict"
    print("\n" + head + "\n" + "-" * (len(head) + 14))
    for r in cmp:
        ratio = "-" if r["ratio_qasid_over_synapse"] is None else f"{r['ratio_qasid_over_synapse']:.2f}"
        note = f"  ({r['note']})" if r.get("note") else ""
        print(f"{r['label']:<40} {r['unit']:<9} {r['better']:<7} {_fmt(r['qasid'], _ran(servers, 'qasid', r['scenario'])):>9} "
              f"{_fmt(r['synapse'], _ran(servers, 'synapse', r['scenario'])):>9} "
              f"{ratio:>6}  {r['verdict']}{note}")


def _ran(servers: dict[str, dict[str, Any]], name: str, scenario: str) -> bool:
    """Whether a missing figure is a failure (the scenario ran, or the server never started) rather
    than a scenario left out with --scenarios."""
    data = servers.get(name)
    if data is None:
        return False
    return bool(data.get("start_error")) or scenario in data.get("results", {}) or scenario in data.get("errors", {})


def print_errors(servers: dict[str, dict[str, Any]]) -> bool:
    failed = False
    for name, data in servers.items():
        if data.get("start_error"):
            failed = True
            print(f"\n{name} did not start:\n{data['start_error']}")
        for scenario, errs in data.get("errors", {}).items():
            failed = True
            print(f"\n{name} failed {scenario}: {len(errs)} error(s); up to 5 shown")
            for e in errs[:5]:
                if "request" in e:
                    print(f"  request:  {e['request']} {json.dumps(e['request_body']) if e['request_body'] is not None else ''}")
                    print(f"  response: {e['status']} {e['response']}")
                else:
                    print(f"  {e['error']}")
        if data.get("log_tail"):
            print(f"\n{name} server log:\n{data['log_tail']}")
    return failed


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m bench servers", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller N everywhere (a smoke run, about a minute)")
    ap.add_argument("--only", choices=("qasid", "synapse"), help="run against one server only")
    ap.add_argument("--scenarios", help="comma-separated subset of: " + ", ".join(k for k, _ in SCENARIOS))
    ap.add_argument("--keep-data", action="store_true", help="keep each server's data directory and logs")
    ap.add_argument("--json", type=Path, default=RESULTS, help=f"where to write results (default {RESULTS})")
    args = ap.parse_args(argv)
    p = Params.quick() if args.quick else Params()
    only = set(args.scenarios.split(",")) if args.scenarios else None
    if only and only - {k for k, _ in SCENARIOS}:
        ap.error(f"unknown scenario(s): {', '.join(sorted(only - {k for k, _ in SCENARIOS}))}")

    started = datetime.datetime.now(datetime.timezone.utc)
    servers: dict[str, dict[str, Any]] = {}
    try:
        for name in ("synapse", "qasid"):  # Synapse first, then Qasid: never both at once
            if args.only and name != args.only:
                continue
            servers[name] = run_server(name, p, only, args.keep_data)
    except KeyboardInterrupt:
        sys.exit("\ninterrupted; servers stopped")

    table = compare(rows(p), servers)
    print_table(table, servers)
    nproc = len(os.sched_getaffinity(0))
    for name, data in servers.items():
        before, after = data.get("loadavg_before"), data.get("loadavg_after")
        if before and after:
            busy = " (busy machine: figures are noisy)" if max(before[0], after[0]) > nproc + 1 else ""
            print(f"load average during {name}: {before[0]:.1f} before, {after[0]:.1f} after, "
                  f"{nproc} CPUs{busy}")
    failed = print_errors(servers)
    report = {"started": started.isoformat(timespec="seconds"), "quick": args.quick,
              "params": p.__dict__, "machine": machine(), "servers": servers, "table": table}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"\nResults written to {args.json}")
    if failed:
        sys.exit(1)
