"""Print the tables of saved benchmark results (``--json`` files) again, e.g. for docs/PERFORMANCE.md.

python -m benchmarks.report var/benchmarks/*.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from benchmarks import api_requests, consoles, fanout, latency, launches, progress, scaleout, stampede
from benchmarks.common import print_report

TABLES = {
    "api_requests": api_requests.table,
    "latency": latency.table,
    "fanout": fanout.table,
    "launches": launches.table,
    "progress": progress.table,
    "stampede": stampede.table,
    "consoles": consoles.table,
    "scaleout": scaleout.table,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--profiles", action="store_true", help="also print each row's profile summary")
    args = parser.parse_args(argv)
    for path in args.files:
        results: dict[str, Any] = json.loads(path.read_text())
        print_report(f"{results['measure']} ({path})", results["command"], results, TABLES[results["measure"]](results))
        if args.profiles:
            for row in results["rows"]:
                if row.get("profile"):
                    label = ", ".join(f"{k}={row[k]}" for k in ("app", "transport", "streams") if k in row)
                    print(f"profile ({label}):\n{row['profile']}\n")


if __name__ == "__main__":
    main()
