"""The Matrix spec's client-server OpenAPI definitions, for validating real responses.

Loads ../shared/matrix-spec/data/api/client-server/*.yaml, inlines every $ref (across files), and
finds the response schema for a (method, request path, status).
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

SPEC_DIR = Path(__file__).resolve().parents[3] / "shared" / "matrix-spec" / "data" / "api" / "client-server"
_PREFIX = re.compile(r"^/_matrix/client(?:/(?:v1|v3|r0))?(?=/)")


@lru_cache(maxsize=None)
def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _resolve(node: Any, base: Path, stack: tuple[str, ...] = ()) -> Any:
    if isinstance(node, dict):
        if "$ref" in node:
            ref = node["$ref"]
            file_part, _, frag = ref.partition("#")
            target_file = (base.parent / file_part).resolve() if file_part else base
            key = f"{target_file}#{frag}"
            if key in stack:
                return {}  # recursive schema: stop expanding (accept anything below)
            target = _load(target_file)
            for part in [p for p in frag.split("/") if p]:
                target = target[part]
            resolved = _resolve(target, target_file, stack + (key,))
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return {**resolved, **_resolve(rest, base, stack)} if rest else resolved
        return {k: _resolve(v, base, stack) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, base, stack) for v in node]
    return node


@lru_cache(maxsize=1)
def operations() -> list[tuple[str, re.Pattern[str], Path, dict[str, Any]]]:
    ops = []
    for f in sorted(SPEC_DIR.glob("*.yaml")):
        doc = _load(f)
        for template, methods in (doc.get("paths") or {}).items():
            pattern = re.compile("^" + re.sub(r"\\\{[^}]+\\\}", "[^/]*", re.escape(template)) + "$")
            for method, op in methods.items():
                if isinstance(op, dict) and "responses" in op:
                    ops.append((method.upper(), pattern, f, op))
    return ops


def response_schema(method: str, path: str, status: int) -> dict[str, Any] | None:
    rest = _PREFIX.sub("", path)
    for m, pattern, f, op in operations():
        if m == method and pattern.match(rest):
            resp = op["responses"].get(str(status)) or op["responses"].get(status)
            if resp is None:
                return None
            resp = _resolve(resp, f)
            schema = ((resp.get("content") or {}).get("application/json") or {}).get("schema")
            return schema
    return None


def validate(method: str, path: str, status: int, body: Any) -> bool:
    """Validate ``body``; returns False if the spec has no schema for it (caller decides if that matters)."""
    schema = response_schema(method, path, status)
    if schema is None:
        return False
    jsonschema.validate(body, schema, cls=jsonschema.Draft202012Validator)
    return True
