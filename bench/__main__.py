"""`make bench`: throughput and lag as users see them (bench/users.py), plus diagnostics.

    python -m bench                       schedules created through the API, deliveries observed at receivers
    python -m bench --peers               ... and APScheduler 3 on the same Postgres (needs the `peers` extra)
    python -m bench --mode direct         rows seeded straight into the table, runs read from it (bench/direct.py)
    python -m bench --mode api            create / list throughput of one tenant as it grows (bench/api.py)

Every mode cleans up its servers and processes on exit, Ctrl-C and SIGTERM.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.infra import exit_on_signals


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--mode", choices=("users", "direct", "api"), default="users")
    parser.add_argument("--peers", action="store_true", help="users mode: also run APScheduler 3, print the ratio")
    parser.add_argument(
        "--configs",
        default="event-js:10000,event-core:10000,http:5000,queue:10000,event-js:10000@1000,event-core:20000@2000",
        help="users mode: KIND:N or KIND:N@RATE (steady), comma-separated; kinds: event-js, event-core, http, queue",
    )
    parser.add_argument("--triggers", default="mixed", help="users mode: mixed, ONE_SHOT, CRON, RRULE, FIXED_DELAY")
    parser.add_argument("--background", type=int, default=0, help="users mode: other schedules in the table")
    parser.add_argument("--bare-size", type=int, default=100_000, help="users mode: due rows for the bare-SQL limit")
    parser.add_argument("--profile", type=Path, default=None, help="users mode: py-spy raw profiles of the workers")
    parser.add_argument("--workers", default=None, help="worker counts, e.g. 1,2,4,8 (users: 2; direct: 1,2,4)")
    parser.add_argument("--sizes", default=None, help="direct: burst sizes (10000,100000); api: tenant sizes")
    parser.add_argument("--steady", default="2000x20,4000x20", help="direct: steady runs RATExSECONDS (2 workers)")
    parser.add_argument("--seconds", type=float, default=8.0, help="api mode: seconds of load per measurement")
    parser.add_argument("--clients", type=int, default=16, help="api mode: concurrent clients")
    args = parser.parse_args()
    exit_on_signals()

    if args.mode == "direct":
        from bench import direct

        args.sizes = args.sizes or "10000,100000"
        args.workers = args.workers or "1,2,4"
        direct.main(args)
    elif args.mode == "api":
        from bench import api

        sizes = [int(s) for s in (args.sizes or "0,10000,100000").split(",")]
        api.run(sizes, args.seconds, args.clients)
    else:
        from bench import users

        configs = []
        for spec in args.configs.split(","):
            kind, _, size = spec.partition(":")
            n, _, rate = size.partition("@")
            configs.append((kind, int(n), float(rate or 0)))
        counts = [int(w) for w in (args.workers or "2").split(",")]
        users.run(configs, counts, args.triggers, args.background, args.bare_size, args.peers, args.profile)


if __name__ == "__main__":
    main()
