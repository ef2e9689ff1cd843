"""`python -m bench [servers|state-res] [options]` — the benchmark entry point used by `make bench`.

`servers` (the default) runs the same client load against Qasid and Synapse on loopback and compares them;
`federation` pushes PDUs through /send and joins a large room over federation, Qasid beside Synapse;
`audit` exports a 10,000-event room and verifies the export; `state-res` times state resolution in-process.
"""

from __future__ import annotations

import sys

BENCHMARKS = ("servers", "state-res", "federation", "audit")


def main() -> None:
    args = sys.argv[1:]
    which = args[0] if args and not args[0].startswith("-") else "servers"
    rest = args[1:] if args and not args[0].startswith("-") else args
    if which == "servers":
        from bench import servers_bench

        servers_bench.main(rest)
    elif which == "federation":
        from bench import federation_bench

        federation_bench.main(rest)
    elif which == "audit":
        from bench import audit_bench

        audit_bench.main(rest)
    elif which == "state-res":
        from bench import state_res_bench

        state_res_bench.main(rest)
    else:
        sys.exit(f"unknown benchmark {which!r}; available: {', '.join(BENCHMARKS)}")


main()
