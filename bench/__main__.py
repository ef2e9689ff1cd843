"""`python -m bench [state-res]` — the benchmark entry point used by `make bench`."""

from __future__ import annotations

import sys

from bench import state_res_bench


def main() -> None:
    args = sys.argv[1:]
    which = args[0] if args and not args[0].startswith("-") else "state-res"
    rest = args[1:] if args and not args[0].startswith("-") else args
    if which == "state-res":
        state_res_bench.main(rest)
    else:
        sys.exit(f"unknown benchmark {which!r}; available: state-res")


main()
