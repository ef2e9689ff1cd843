"""The e2ee package is a client library: it must stay usable without the server code."""

from __future__ import annotations

import subprocess
import sys


def test_e2ee_never_imports_the_homeserver() -> None:
    code = (
        "import sys, e2ee, e2ee.machine, e2ee.attachments, e2ee.export, e2ee.store;"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('homeserver', 'federation', 'appservices'));"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
