"""The analytics lake's infrastructure (issue 18, docs/analytics.md): an ADLS Gen2 account the app reaches with its
identity only, lifecycle rules from described parameters, and the settings the code reads pointing at it."""

from __future__ import annotations

import json
from typing import Any

from infra_model import Bicep, accessor, body

from shared import settings
from shared.lake.schema import DEFAULT_CONTAINER


def test_the_lake_is_an_identity_only_adls_gen2_account(module_of: Any) -> None:
    _, _, lake = module_of("main.bicep", "core/storage/data-lake.bicep")
    (account,) = lake.resources_of_type("Microsoft.Storage/storageAccounts").values()
    properties = body(account)["properties"]
    assert properties["isHnsEnabled"] is True
    assert properties["allowSharedKeyAccess"] is False
    assert properties["allowBlobPublicAccess"] is False
    assert properties["minimumTlsVersion"] == "TLS1_2"
    (container,) = lake.resources_of_type("Microsoft.Storage/storageAccounts/blobServices/containers").values()
    assert body(container)["properties"]["publicAccess"] == "None"
    assert lake.parameters["containerName"]["default"] == DEFAULT_CONTAINER == settings.setting("LAKE_CONTAINER", {})


def test_lifecycle_cools_then_deletes_after_the_retention_parameter(main_bicep: Bicep, module_of: Any) -> None:
    _, declaration, lake = module_of("main.bicep", "core/storage/data-lake.bicep")
    params = body(declaration)["params"]
    assert params["retentionInDays"] == "lakeRetentionInDays"
    assert params["coolAfterDays"] == "lakeCoolAfterDays"
    assert (
        main_bicep.parameters["lakeRetentionInDays"]["default"] > main_bicep.parameters["lakeCoolAfterDays"]["default"]
    )
    for name in ("lakeRetentionInDays", "lakeCoolAfterDays"):
        described = [d for d in main_bicep.parameters[name]["decorators"] if d["type"] == "description"]
        assert described, f"{name} has no description"
    (policy,) = lake.resources_of_type("Microsoft.Storage/storageAccounts/managementPolicies").values()
    (rule,) = body(policy)["properties"]["policy"]["rules"]
    actions = rule["definition"]["actions"]["baseBlob"]
    assert actions["tierToCool"]["daysAfterModificationGreaterThan"] == "coolAfterDays"
    assert "retentionInDays" in json.dumps(actions["delete"])


def test_the_function_app_writes_the_lake_it_is_configured_with(bicep: dict[str, Bicep], module_of: Any) -> None:
    _, app_module, app = module_of("main.bicep", "app/function-app.bicep")
    assert accessor(body(app_module)["params"]["lakeBlobEndpoint"]) == "lake.outputs.blobEndpoint"
    shared_settings = app.var("sharedSettings")
    assert shared_settings["LAKE_BLOB_SERVICE_URI"] == "lakeBlobEndpoint"
    assert shared_settings["LAKE_CONTAINER"] == DEFAULT_CONTAINER
    _, rbac_module, rbac = module_of("main.bicep", "app/rbac.bicep")
    assert accessor(body(rbac_module)["params"]["lakeAccountName"]) == "lake.outputs.name"
    assignment = body(rbac.resources["functionLake"])
    assert assignment["scope"] == "lake", "Storage Blob Data Contributor on the lake account only"
    assert rbac.var("storageBlobDataContributorRoleId") == "ba92f5b4-2d11-453d-a403-e96b0029c9fe"
