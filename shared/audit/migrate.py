"""Copy an older deployment's audit entries from the container `audit` into `auditEntries`.

`audit` was partitioned by brand alone, so one brand's entries could fill a logical partition (20 GB) and its
audited routes would then be refused. `auditEntries` has a hierarchical key (shared/audit/log.py). A container's
partition key cannot change in place, so the new key is a new container, and the entries written before the upgrade
would drop out of the brands' audit logs unless copied.

Run once after `azd up` on an environment deployed before the change, with the function app's COSMOS_* settings and
an identity holding the Cosmos DB data contributor role: `python -m shared.audit.migrate`. Safe to run again and to
stop half way: an entry already copied is left as it is (same id), and one whose retention is over is not copied.
Each copy keeps the rest of its retention, counted from when it was written. The old container is left for you to
delete once the copy is checked.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import sys
from dataclasses import asdict, dataclass
from typing import Final

import orjson

from shared.audit.log import LEGACY, AuditLog
from shared.containers import AUDIT
from shared.device_messages import canonical_time
from shared.errors import ConflictError, NotFoundError
from shared.stores.base import DocumentStore
from shared.stores.paging import keyset_page

PAGE: Final = 200


@dataclass
class Migrated:
    copied: int = 0
    present: int = 0  # copied by an earlier run
    expired: int = 0  # retention over: not copied
    source_found: bool = True


async def copy_legacy(store: DocumentStore, log: AuditLog, source: str = LEGACY) -> Migrated:
    """Copy every entry of `source` into the audit container, oldest first, a page at a time."""
    result = Migrated()
    token: str | None = None
    while True:
        try:
            page = await keyset_page(
                store,
                source,
                scope=f"migrate|{source}",
                where="IS_DEFINED(c.brandId)",
                parameters={},
                key="at",
                limit=PAGE,
                token=token,
            )
        except NotFoundError:  # a deployment made after the change: nothing to copy
            result.source_found = False
            return result
        for doc in page.items:
            entry = {k: v for k, v in doc.items() if not k.startswith("_")}
            remaining = log.remaining_ttl(entry)
            if remaining <= 0:
                result.expired += 1
                continue
            entry["ttl"] = remaining
            entry.setdefault("expiresAt", canonical_time(log.clock() + dt.timedelta(seconds=remaining)))
            try:
                await store.create(AUDIT, entry)
            except ConflictError:
                result.present += 1
                continue
            result.copied += 1
        token = page.token
        if token is None:
            return result


async def _main() -> Migrated:
    from shared.settings import number_setting
    from shared.stores.cosmos import cosmos_store_from_env

    store = cosmos_store_from_env.get()
    try:
        return await copy_legacy(store, AuditLog(store, retention_days=int(number_setting("AUDIT_RETENTION_DAYS"))))
    finally:
        await store.close()


if __name__ == "__main__":
    if sys.argv[1:]:
        sys.exit("usage: python -m shared.audit.migrate")
    sys.stdout.write(orjson.dumps(asdict(asyncio.run(_main()))).decode() + "\n")
