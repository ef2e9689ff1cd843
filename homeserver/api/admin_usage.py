"""GET /_qasid/admin/v1/usage: the signed usage report for billing (the same document as ``qasid usage
report``), or with ``format=csv`` its daily rows for a spreadsheet (unsigned)."""

from __future__ import annotations

from aiohttp import web

from homeserver.api.context import hs_of
from homeserver.api.http import Routes, json_response
from homeserver.services.usage import PeriodError, parse_period, report_csv, utc_day


async def usage_report(request: web.Request) -> web.Response:
    hs = hs_of(request)
    await hs.admin_requester(request)  # before looking at parameters: non-admins learn nothing
    fmt = request.query.get("format", "json")
    if fmt not in ("json", "csv"):
        raise PeriodError("format", "must be json or csv")
    first, last = parse_period(request.query.get("from"), request.query.get("to"), utc_day(hs.clock.time_ms()))
    report = await hs.usage.report(first, last)
    if fmt == "json":
        return json_response(report)
    safe = "".join(c if c.isalnum() or c in ".-" else "_" for c in hs.config.server_name)
    name = f"usage-{safe}-{first.isoformat()}-{last.isoformat()}.csv"
    return web.Response(text=report_csv(report), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


def setup(routes: Routes) -> None:
    routes.add("GET", "/_qasid/admin/v1/usage", usage_report)
