"""`python -m analytics --lake DIR --out DIR` (what `make report` runs): the report over a lake directory."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analytics.report import compute, render


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analytics", description=__doc__)
    parser.add_argument(
        "--lake", type=Path, default=Path(".demo/lake"), help="the lake directory (default: the demo's)"
    )
    parser.add_argument("--out", type=Path, default=Path(".demo/report"), help="where the PDF and PNGs go")
    args = parser.parse_args(argv)
    if not args.lake.is_dir():
        print(f"no lake at {args.lake}: run `make demo` first, or give LAKE=<directory>", file=sys.stderr)
        return 2
    figures = compute(args.lake)
    print(figures.to_text())
    written = render(figures, args.out)
    print(f"\nreport: {written[0]} (+ {len(written) - 1} PNGs in {args.out})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
