"""`python -m analytics --lake LAKE --out DIR` (what `make report` runs): the report over a lake.

LAKE is a directory with the lake's layout (the copy `make demo` leaves in .demo/lake), or the lake container's URL
in Azure (`https://<account>.blob.core.windows.net/lake`; the `dfs` endpoint works too), read with your Entra
identity (DefaultAzureCredential: `az login`; the role it needs is Storage Blob Data Reader, no keys). With
`--connection-string` (and `--container`) it reads a storage account by connection string instead, e.g. the
Azurite of a running `make dev`. A lake in a storage account is copied to a temporary directory first.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from analytics.report import compute, render

if TYPE_CHECKING:
    from shared.lake.store import LakeStore


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m analytics", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lake", default=".demo/lake", help="a lake directory or container URL (default: the demo's)")
    parser.add_argument("--connection-string", help="read the lake from this storage account (e.g. Azurite)")
    parser.add_argument("--container", default="lake", help="the lake's container with --connection-string")
    parser.add_argument("--out", type=Path, default=Path(".demo/report"), help="where the PDF and PNGs go")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="lake-") as scratch:
        if args.connection_string or args.lake.startswith("https://"):
            root = Path(scratch)
            copied = asyncio.run(_download(_store(args), root))
            print(f"copied {copied} lake files from {args.lake if not args.connection_string else args.container}")
        else:
            root = Path(args.lake)
            if not root.is_dir():
                print(f"no lake at {root}: run `make demo` first, or give LAKE=<directory or URL>", file=sys.stderr)
                return 2
        figures = compute(root)
    print(figures.to_text())
    written = render(figures, args.out)
    print(f"\nreport: {written[0]} (+ {len(written) - 1} PNGs in {args.out})")
    return 0


def _store(args: argparse.Namespace) -> LakeStore:
    from analytics.local import blob_lake

    if args.connection_string:
        return blob_lake(args.connection_string, args.container)
    from azure.identity.aio import DefaultAzureCredential
    from azure.storage.blob.aio import BlobServiceClient

    from shared.lake.store import BlobLakeStore

    url = urlsplit(args.lake)
    container = url.path.strip("/").split("/")[0] or "lake"
    account = f"https://{url.netloc.replace('.dfs.', '.blob.')}"
    return BlobLakeStore(BlobServiceClient(account, credential=DefaultAzureCredential()), container)


async def _download(store: LakeStore, root: Path) -> int:
    from analytics.local import copy_to_directory

    try:
        return await copy_to_directory(store, root)
    finally:
        await store.close()


if __name__ == "__main__":
    sys.exit(main())
