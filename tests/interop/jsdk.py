"""Run a matrix-js-sdk script (tests/interop/js/*.mjs) against a server and return its JSON result."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

JS_DIR = Path(__file__).parent / "js"


def require_node() -> str:
    node = shutil.which("node")
    installed = (JS_DIR / "node_modules" / "matrix-js-sdk").is_dir()
    if node is None or not installed:
        why = "node is not installed" if node is None else "run `make test` (npm ci in tests/interop/js)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"matrix-js-sdk interop is required in CI: {why}")
        pytest.skip(f"matrix-js-sdk not available: {why}")
    return node


async def run_js(script: str, args: dict[str, Any], timeout: float = 120) -> dict[str, Any]:
    node = require_node()
    proc = await asyncio.create_subprocess_exec(
        node, str(JS_DIR / script), json.dumps(args), cwd=JS_DIR,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    lines = [line for line in out.decode().splitlines() if line.startswith("{")]
    assert proc.returncode == 0 and lines, f"{script} failed ({proc.returncode}):\n{err.decode()[-3000:]}\n{out.decode()[-3000:]}"
    return json.loads(lines[-1])


class JsProcess:
    """A matrix-js-sdk script that runs alongside the test, which reads its JSON lines as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, script: str, args: dict[str, Any]) -> "JsProcess":
        node = require_node()
        proc = await asyncio.create_subprocess_exec(
            node, str(JS_DIR / script), json.dumps(args), cwd=JS_DIR,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        return cls(proc)

    async def next_json(self, timeout: float = 90) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
            if not line:
                err = (await self.proc.stderr.read()).decode()[-3000:] if self.proc.stderr else ""
                raise AssertionError(f"script ended early ({await self.proc.wait()}):\n{err}")
            if line.startswith(b"{"):
                return json.loads(line)

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
