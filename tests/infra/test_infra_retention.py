"""Retention in the infrastructure: the dead-letter container's lifecycle rule, and container TTLs that agree
with the retention table of docs/data-model.md (the one place an operator reads how long data is kept)."""

from __future__ import annotations

import json
import re
from typing import Any

from infra_model import ROOT, Bicep, accessor, body, condition, loop_source

DAY = 86400


def test_dead_letters_expire_by_a_lifecycle_rule_on_their_container(main_bicep: Bicep, module_of: Any) -> None:
    # GIVEN the storage module of main.bicep
    _, storage_module, storage = module_of("main.bicep", "core/storage/storage-account.bicep")
    # THEN main asks for the deadletter container to expire after deadLetterRetentionInDays (default 30)
    params = body(storage_module)["params"]
    assert params["expiringContainers"] == [{"name": "deadLetterContainerName", "days": "deadLetterRetentionInDays"}]
    assert main_bicep.var("deadLetterContainerName") == "deadletter"
    assert main_bicep.parameters["deadLetterRetentionInDays"]["default"] == 30
    # AND the module turns each entry into a lifecycle rule deleting block blobs under the container's prefix
    (policy,) = storage.resources_of_type("Microsoft.Storage/storageAccounts/managementPolicies").values()
    assert body(policy)["name"] == "default"
    assert condition(policy) is not None  # only when something expires
    rules = body(policy)["properties"]["policy"]["rules"]
    assert accessor(loop_source(rules)) == "expiringContainers"
    rule = body(rules)
    assert (rule["enabled"], rule["type"]) == (True, "Lifecycle")
    assert rule["definition"]["filters"]["blobTypes"] == ["blockBlob"]
    assert "expiring.name" in json.dumps(rule["definition"]["filters"]["prefixMatch"])
    delete = rule["definition"]["actions"]["baseBlob"]["delete"]
    assert accessor(delete["daysAfterModificationGreaterThan"]) == "expiring.days"


def retention_table() -> dict[str, str]:
    """The `set by` column of docs/data-model.md's retention table, by the container named in `where`."""
    text = (ROOT / "docs" / "data-model.md").read_text(encoding="utf-8")
    section = text.split("## Retention", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[1].startswith("`"):
            rows.setdefault(cells[1].strip("`"), cells[3])
    return rows


def test_container_ttls_are_the_documented_retention() -> None:
    containers = json.loads((ROOT / "shared" / "cosmos_containers.json").read_text())["containers"]
    table = retention_table()
    for container in containers:
        ttl, name = container["defaultTtl"], container["name"]
        if isinstance(ttl, int) and ttl > 0:
            assert table[name] == f"`defaultTtl` {ttl}", name
            assert f"{ttl // DAY} days" in (ROOT / "docs" / "data-model.md").read_text(), name
    # the data that says where people go, and what they arranged, does not stay forever
    ttls = {c["name"]: c["defaultTtl"] for c in containers}
    for name in ("telemetry", "trips", "alerts", "meetings"):
        assert isinstance(ttls[name], int), name
        assert ttls[name] > 0, name
    assert ttls["calendars"] == -1  # on, items may expire; the window and unlink bound the rest
    assert re.search(r"`deadletter` \| 30 days", (ROOT / "docs" / "data-model.md").read_text())
