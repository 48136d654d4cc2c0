"""Infra and code agree: every setting the code reads is set on the function app, every container, Event Hub,
consumer group and queue the code names exists, and every identity holds exactly the data roles it needs.

The facts come from their single sources (shared/settings.py, shared/cosmos_containers.json,
shared/iothub_routes.json, the functions' own bindings) and from the parsed Bicep."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from infra_model import INFRA, ROOT, Bicep, accessor, body, condition, function, loop_source

from shared import settings

# Settings the platform reads (not the code): allowed on the app although not in SETTINGS.
PLATFORM_SETTINGS = {"APPLICATIONINSIGHTS_CONNECTION_STRING", "APPLICATIONINSIGHTS_AUTHENTICATION_STRING"}
# Settings that name which managed identity to use: meaningless locally, where your own sign-in is used.
IDENTITY_SETTING = re.compile(r"(__credential|__clientId|^AZURE_CLIENT_ID)$")

ROLE = {
    "b7e6dc6d-f1e8-4753-8033-0f276bb0955b": "Storage Blob Data Owner",
    "ba92f5b4-2d11-453d-a403-e96b0029c9fe": "Storage Blob Data Contributor",
    "974c5e8b-45b9-4653-ba55-5f855dd0fb88": "Storage Queue Data Contributor",
    "a638d3c7-ab3a-418d-83e6-5f17a39d4fde": "Azure Event Hubs Data Receiver",
    "2b629674-e913-4c01-ae53-ef4638d8f975": "Azure Event Hubs Data Sender",
    "4fc6c259-987e-4a07-842e-c321cc9d413f": "IoT Hub Data Contributor",
    "dfce44e4-17b7-4bd1-a6d1-04996ec95633": "Device Provisioning Service Data Contributor",
    "custom:enrollmentKeyReader": "DPS enrollment group key reader (custom)",
    "3913510d-42f4-4e42-8a64-420c390055eb": "Monitoring Metrics Publisher",
    "00000000-0000-0000-0000-000000000002": "Cosmos DB Built-in Data Contributor",
    "e147488a-f6f5-4113-8e2d-b22465e65bf6": "Key Vault Crypto Service Encryption User",
    "423170ca-a8f6-4b0f-8487-9e4eb8f49bfa": "Azure Maps Data Reader",
}
FORBIDDEN_ROLES = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": "Owner",
    "b24988ac-6180-42a0-ab88-20f7382dd24c": "Contributor",
    "18d7d88d-d35e-4fb5-a5c3-7773c20a72d9": "User Access Administrator",
    "f58310d9-a9f6-439a-9e8d-f62e7b41a168": "Role Based Access Control Administrator",
    "00000000-0000-0000-0000-000000000001": "Cosmos DB Built-in Data Reader",  # not broader, but unused
}
# (principal, role, scope resource type): why each exists is in app/rbac.bicep, app/iot-hub-rbac.bicep (one
# module per IoT Hub stamp) and core/iot/iot-hub.bicep.
EXPECTED_ROLES = {
    ("function", "Storage Blob Data Owner", "Microsoft.Storage/storageAccounts"),
    ("function", "Storage Blob Data Contributor", "Microsoft.Storage/storageAccounts"),  # the lake account
    ("function", "Storage Queue Data Contributor", "Microsoft.Storage/storageAccounts"),
    ("function", "Azure Event Hubs Data Receiver", "Microsoft.EventHub/namespaces"),
    ("function", "IoT Hub Data Contributor", "Microsoft.Devices/IotHubs"),
    ("function", "Monitoring Metrics Publisher", "Microsoft.Insights/components"),
    ("function", "Cosmos DB Built-in Data Contributor", "Microsoft.DocumentDB/databaseAccounts"),
    ("function", "DPS enrollment group key reader (custom)", "Microsoft.Devices/provisioningServices"),
    # wrap/unwrap with the one key that seals drivers' token caches (no person gets it: core/security/key-vault.bicep)
    ("function", "Key Vault Crypto Service Encryption User", "Microsoft.KeyVault/vaults/keys"),
    # geocoding, routes and charging stations for travel figures (core/maps/maps-account.bicep, issue 17)
    ("function", "Azure Maps Data Reader", "Microsoft.Maps/accounts"),
    ("iothub", "Azure Event Hubs Data Sender", "Microsoft.EventHub/namespaces"),
    ("dps", "IoT Hub Data Contributor", "Microsoft.Devices/IotHubs"),
    ("user", "Storage Blob Data Owner", "Microsoft.Storage/storageAccounts"),
    ("user", "Storage Queue Data Contributor", "Microsoft.Storage/storageAccounts"),
    ("user", "Azure Event Hubs Data Receiver", "Microsoft.EventHub/namespaces"),
    ("user", "Azure Event Hubs Data Sender", "Microsoft.EventHub/namespaces"),
    ("user", "IoT Hub Data Contributor", "Microsoft.Devices/IotHubs"),
    ("user", "Cosmos DB Built-in Data Contributor", "Microsoft.DocumentDB/databaseAccounts"),
    ("user", "Device Provisioning Service Data Contributor", "Microsoft.Devices/provisioningServices"),
    ("user", "Azure Maps Data Reader", "Microsoft.Maps/accounts"),
}
PRINCIPALS = {
    "functionPrincipalId": "function",
    "userPrincipalId": "user",
    "identity.properties.principalId": "iothub",
    "dpsPrincipalId": "dps",
}


def shared_json(name: str) -> dict[str, Any]:
    return json.loads((ROOT / "shared" / name).read_text(encoding="utf-8"))


def loaded_json(main: Bicep, variable: str) -> Path:
    """The file a `var x = loadJsonContent('...')` of main.bicep reads, resolved."""
    call = function(main.var(variable), "load_json_content")
    assert call, f"main.bicep: {variable} must be loadJsonContent(...)"
    return (INFRA / call["file_path"]).resolve()


def resolve(value: str, app_settings: dict[str, Any], function_app: Bicep) -> str:
    """Resolve a binding expression `%NAME%` the way the host does: app setting, here the Bicep literal or the
    code default."""
    match = re.fullmatch(r"%(\w+)%", value)
    if not match:
        return value
    name = match.group(1)
    bicep_value = app_settings.get(name)
    if isinstance(bicep_value, str) and not function_app.is_ref(bicep_value) and "${" not in bicep_value:
        return bicep_value
    default = settings.setting(name, {})
    assert default, f"{value}: no literal value in Bicep and no default in shared/settings.py"
    return default


# ---- settings ----


def test_every_setting_the_code_reads_in_azure_is_set_on_the_function_app(app_settings: dict[str, Any]) -> None:
    needed = {s.name for s in settings.SETTINGS if s.azure}
    assert needed <= set(app_settings), (
        f"set these in infra/app/function-app.bicep: {sorted(needed - set(app_settings))}"
    )


def test_the_function_app_sets_nothing_the_code_does_not_declare(app_settings: dict[str, Any]) -> None:
    declared = {s.name for s in settings.SETTINGS if s.azure} | PLATFORM_SETTINGS
    assert set(app_settings) <= declared, f"undeclared (add to shared/settings.py?): {set(app_settings) - declared}"


def test_local_only_settings_and_secrets_stay_out_of_azure(app_settings: dict[str, Any]) -> None:
    local_only = {s.name for s in settings.SETTINGS if not s.azure}
    assert not local_only & set(app_settings), "COSMOS_KEY / AzureWebJobsStorage connection strings are local only"
    for name in app_settings:
        assert not re.search(r"KEY$|SECRET|PASSWORD|SAS", name), f"{name} looks like a secret"


def test_settings_with_a_code_default_repeat_that_default(
    app_settings: dict[str, Any], function_app_bicep: Bicep
) -> None:
    for s in settings.SETTINGS:
        value = app_settings.get(s.name)
        if s.default is None or not isinstance(value, str) or function_app_bicep.is_ref(value) or "${" in value:
            continue
        assert value == s.default, f"{s.name}: Bicep sets {value!r}, the code's default is {s.default!r}"


def test_identity_based_connections_use_the_apps_identity(app_settings: dict[str, Any]) -> None:
    for prefix in ("AzureWebJobsStorage", settings.EVENTHUB_CONNECTION):
        assert app_settings[f"{prefix}__credential"] == "managedidentity"
        assert app_settings[f"{prefix}__clientId"] == "identityClientId"
    assert app_settings["AZURE_CLIENT_ID"] == "identityClientId"
    assert app_settings["APPLICATIONINSIGHTS_AUTHENTICATION_STRING"] == "ClientId=${identityClientId};Authorization=AAD"


def test_local_settings_are_the_shared_ones_without_identity_selection(
    app_setting_vars: dict[str, dict[str, Any]], function_app_bicep: Bicep, main_bicep: Bicep
) -> None:
    output = function_app_bicep.outputs["localSettings"]["value"]
    union = function(output, "union")
    assert union
    shared_var = union["arg_1"]
    assert union["arg_2"] == {"FUNCTIONS_WORKER_RUNTIME": "python"}
    local = app_setting_vars[shared_var]
    assert not [name for name in local if IDENTITY_SETTING.search(name)], "identity settings would break local runs"
    everything = {name for values in app_setting_vars.values() for name in values}
    azure_only = everything - set(local)
    assert azure_only - PLATFORM_SETTINGS == {n for n in everything if IDENTITY_SETTING.search(n)}
    assert accessor(main_bicep.outputs["LOCAL_SETTINGS"]["value"]) == "functionApp.outputs.localSettings"


# ---- Cosmos DB ----


def test_cosmos_containers_come_from_the_shared_json(main_bicep: Bicep, module_of: Any) -> None:
    assert loaded_json(main_bicep, "cosmosDefinition") == ROOT / "shared" / "cosmos_containers.json"
    _, cosmos_module, account = module_of("main.bicep", "core/database/cosmos-account.bicep")
    assert body(cosmos_module)["params"]["definition"] == "cosmosDefinition"
    assert (
        body(account.resources["database"])["name"] == "definition.database"
        or accessor(body(account.resources["database"])["name"]) == "definition.database"
    )

    _, containers, container = module_of("core/database/cosmos-account.bicep", "cosmos-container.bicep")
    assert accessor(loop_source(containers)) == "definition.containers", "one container per JSON entry"
    params = body(containers)["params"]
    assert accessor(params["name"]) == "container.name"
    # every level of the key: the top one, then the JSON's subpartitionKeys when it has them
    levels = function(params["partitionKeyPaths"], "concat")
    assert [accessor(top) for top in levels["arg_1"]] == ["container.partitionKey"]
    below = levels["arg_2"]["operator"]["operands"]
    assert accessor(below["true_value"]) == "container.subpartitionKeys"
    assert below["false_value"] == []
    assert accessor(params["includedPaths"]) == "container.includedPaths"
    assert accessor(params["compositeIndexes"]) == "container.compositeIndexes"
    ttl = json.dumps(params["defaultTtl"])
    assert "containerTtlOverrides" in ttl
    assert "defaultTtl" in ttl

    (resource,) = container.resources_of_type("Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers").values()
    definition = function(body(resource)["properties"]["resource"], "union")["arg_1"]
    assert definition["partitionKey"]["paths"] == "partitionKeyPaths"
    assert "MultiHash" in json.dumps(definition["partitionKey"]["kind"])
    indexing = definition["indexingPolicy"]
    assert indexing["indexingMode"] == "consistent"
    assert indexing["excludedPaths"] == [{"path": "/*"}]
    assert indexing["includedPaths"] == "indexedPaths"
    assert indexing["compositeIndexes"] == "compositeIndexes"
    assert accessor(loop_source(container.variables["indexedPaths"]["value"])) == "includedPaths"


def test_the_database_name_agrees_between_code_and_json() -> None:
    assert settings.setting("COSMOS_DATABASE", {}) == shared_json("cosmos_containers.json")["database"]


def test_every_json_container_has_a_partition_key_and_index_paths() -> None:
    # the Bicep passes these straight through: a malformed entry would fail only at deployment
    for container in shared_json("cosmos_containers.json")["containers"]:
        assert container["partitionKey"].startswith("/"), container["name"]
        below = container.get("subpartitionKeys", [])
        assert len(below) <= 2, container["name"]  # 3 levels at most
        assert all(p.startswith("/") for p in below), container["name"]
        assert container["includedPaths"], container["name"]
        assert container["defaultTtl"] is None or container["defaultTtl"] >= -1, container["name"]
        for composite in container["compositeIndexes"]:  # Cosmos DB takes 2 to 8 paths, no wildcard or `/?`
            assert 2 <= len(composite) <= 8, container["name"]
            for part in composite:
                assert set(part) == {"path", "order"}, container["name"]
                assert part["path"].startswith("/"), container["name"]
                assert not part["path"].endswith(("/?", "/*")), container["name"]
                assert part["order"] in ("ascending", "descending"), container["name"]


def test_the_brand_cost_query_has_its_composite_index() -> None:
    # A brand's cars are summed page by page, filtered by brand and ordered by id (shared/cost/rollup.py): without
    # a (brandId, id) composite index every page scans other brands' cars in id order (RU grows with the fleet).
    from shared.cost import rollup

    query = rollup.BRAND_COST_PAGE
    assert "c.brandId = @brand" in query
    # Cosmos DB uses a (filter, ORDER BY) composite index only when the ORDER BY names the filter's property too
    # (learn.microsoft.com, indexing policy: "Queries with a filter and ORDER BY").
    assert query.rstrip().endswith("ORDER BY c.brandId, c.id")
    (vehicles,) = [c for c in shared_json("cosmos_containers.json")["containers"] if c["name"] == "vehicles"]
    assert [{"path": "/brandId", "order": "ascending"}, {"path": "/id", "order": "ascending"}] in vehicles[
        "compositeIndexes"
    ]


# ---- IoT Hub routes, Event Hubs, consumer groups, queues ----


def test_iot_hub_routes_come_from_the_shared_json(main_bicep: Bicep, module_of: Any) -> None:
    assert loaded_json(main_bicep, "iotHubRouting") == ROOT / "shared" / "iothub_routes.json"
    _, iot_module, iot = module_of("main.bicep", "core/iot/iot-hub.bicep")
    assert body(iot_module)["params"]["routing"] == "iotHubRouting"
    (hub,) = iot.resources_of_type("Microsoft.Devices/IotHubs").values()
    routing = body(hub)["properties"]["routing"]
    assert accessor(loop_source(routing["routes"])) == "routing.routes"
    route = body(routing["routes"])
    assert accessor(route["condition"]) == "route.condition"
    assert [accessor(e) for e in route["endpointNames"]] == ["route.eventHub"]
    assert route["source"] == "DeviceMessages"
    endpoint = body(routing["endpoints"]["eventHubs"])
    assert endpoint["authenticationType"] == "identityBased"
    assert accessor(endpoint["identity"]["userAssignedIdentity"]) == "identity.id"
    assert endpoint["name"] == endpoint["entityPath"] == "hubName"
    assert accessor(routing["fallbackRoute"]["isEnabled"]) == "routing.fallback"
    assert shared_json("iothub_routes.json")["fallback"] is True


def test_event_hubs_are_the_routed_hubs_each_with_the_functions_consumer_group(
    main_bicep: Bicep, module_of: Any
) -> None:
    assert accessor(loop_source(main_bicep.variables["routedEventHubs"]["value"])) == "iotHubRouting.routes"
    assert function(main_bicep.var("eventHubNames"), "union")["arg_1"] == "routedEventHubs"
    _, hubs_module, hubs = module_of("main.bicep", "core/messaging/event-hubs.bicep")
    params = body(hubs_module)["params"]
    assert params["eventHubNames"] == "eventHubNames"
    assert main_bicep.var(params["consumerGroupName"]) == settings.CONSUMER_GROUP
    routed = {r["eventHub"] for r in shared_json("iothub_routes.json")["routes"]}
    assert {k for k in params["partitionCounts"]} <= routed, "partition counts for hubs that do not exist"
    assert loop_source(hubs.resources["eventHubs"]) == "eventHubNames"
    groups = hubs.resources["consumerGroups"]
    assert loop_source(groups) == "eventHubNames", "a consumer group on every hub"
    assert body(groups)["name"] == "consumerGroupName"


def test_every_device_message_takes_exactly_one_route_so_none_reaches_the_unread_fallback() -> None:
    # The built-in endpoint behind the fallback route is read by nothing: a message only it would take is lost.
    # The conditions are evaluated as IoT Hub does (devstack/iothub/routing.py), on the values they name and on
    # what a car may get wrong (no type, an empty or unknown one, the wrong case of the property or the value).
    from devstack.iothub.routing import Routes

    definition = shared_json("iothub_routes.json")
    routes = Routes.from_definition(definition)
    named = {
        v.replace("''", "'") for r in definition["routes"] for v in re.findall(r"'((?:[^']|'')*)'", r["condition"])
    }
    samples: list[dict[str, str]] = [{}, {"other": "telemetry"}, {"type": ""}, {"type": "bogus"}]
    samples += [{"type": v} for v in named] + [{"type": v.upper()} for v in named] + [{"Type": v} for v in named]
    for properties in samples:
        taken = [r.name for r in routes.matching(properties)]
        assert len(taken) == 1, f"a message with application properties {properties} is taken by {taken}"
    assert routes.matching({})[0].event_hub == routes.matching({"type": "bogus"})[0].event_hub == "unrouted"


def test_every_routed_event_hub_is_read_by_a_trigger(
    trigger_bindings: list[dict[str, Any]], app_settings: dict[str, Any], function_app_bicep: Bicep
) -> None:
    # A hub nobody reads is the fallback problem again: messages kept for the retention period, then gone.
    read = {
        resolve(b["eventHubName"], app_settings, function_app_bicep)
        for b in trigger_bindings
        if b["type"] == "eventHubTrigger"
    }
    routed = {r["eventHub"] for r in shared_json("iothub_routes.json")["routes"]}
    assert routed <= read, f"routed to but read by no function: {sorted(routed - read)}"


def test_event_hubs_keep_events_seven_days_by_default(main_bicep: Bicep, module_of: Any) -> None:
    # Retention bounds the outage the functions can have without loss (README: "How long can the backend be down").
    _, hubs_module, hubs = module_of("main.bicep", "core/messaging/event-hubs.bicep")
    for file, name in ((main_bicep, "eventHubsRetentionInDays"), (hubs, "messageRetentionInDays")):
        param = file.parameters[name]
        limits = {d["type"]: d["argument"] for d in param["decorators"]}
        assert param["default"] == 7, f"{name} defaults to 7 days"
        assert (limits["min_value"], limits["max_value"]) == (1, 7), f"{name}: Standard allows 1-7 days"
    assert body(hubs_module)["params"]["messageRetentionInDays"] == "eventHubsRetentionInDays"
    assert body(hubs.resources["eventHubs"])["properties"]["messageRetentionInDays"] == "messageRetentionInDays"


def test_every_event_hub_trigger_reads_an_existing_hub_and_consumer_group(
    trigger_bindings: list[dict[str, Any]], app_settings: dict[str, Any], function_app_bicep: Bicep
) -> None:
    triggers = [b for b in trigger_bindings if b["type"] == "eventHubTrigger"]
    assert triggers, "no Event Hubs trigger found"
    hubs = {r["eventHub"] for r in shared_json("iothub_routes.json")["routes"]}
    for trigger in triggers:
        who = trigger["functionName"]
        hub = resolve(trigger["eventHubName"], app_settings, function_app_bicep)
        assert hub in hubs, f"{who}: Event Hub {hub!r} is not created (routes: {sorted(hubs)})"
        group = resolve(trigger.get("consumerGroup", "$Default"), app_settings, function_app_bicep)
        assert group == settings.CONSUMER_GROUP, f"{who}: consumer group {group!r} is not created"
        connection = trigger["connection"]
        assert f"{connection}__fullyQualifiedNamespace" in app_settings, f"{who}: connection {connection!r} unset"


def test_every_queue_trigger_and_the_dead_letter_container_exist(
    trigger_bindings: list[dict[str, Any]], app_settings: dict[str, Any], function_app_bicep: Bicep, main_bicep: Bicep
) -> None:
    params = body(main_bicep.modules["storage"])["params"]

    def literal(value: str) -> str:
        if main_bicep.is_ref(value):
            return str(main_bicep.var(value))
        return re.sub(r"\$\{(\w+)\}", lambda m: str(main_bicep.var(m.group(1))), value)

    queues = {literal(q) for q in params["queueNames"]}
    containers = {literal(c) for c in params["containerNames"]}
    assert settings.DEADLETTER_CONTAINER in containers
    for trigger in (b for b in trigger_bindings if b["type"] == "queueTrigger"):
        queue = resolve(trigger["queueName"], app_settings, function_app_bicep)
        assert queue in queues, f"{trigger['functionName']}: queue {queue!r} is not created"
        assert f"{queue}-poison" in queues


# ---- roles ----


def _role_assignments(bicep: dict[str, Bicep]) -> list[tuple[str, str, str, str, Any]]:
    """(file, principal kind, role name, scope type, condition) of every Azure RBAC and Cosmos DB assignment."""
    found = []
    for file, b in bicep.items():
        for name, r in b.resources.items():
            if r["existing"]:
                continue
            config = body(r)
            if r["type"] == "Microsoft.Authorization/roleAssignments":
                definition = config["properties"]["roleDefinitionId"]
                role_var = function(definition, "subscription_resource_id")
                if role_var is None:  # a custom role of this file: `roleDefinitionId: <roleDefinitions symbol>.id`
                    role_ref = accessor(definition)
                    custom = str(role_ref).removesuffix(".id")
                    assert b.resources[custom]["type"] == "Microsoft.Authorization/roleDefinitions", f"{file}:{name}"
                    role_id = f"custom:{custom}"
                else:
                    role_ref = role_var["resource_name_1"]
                    role_id = b.var(role_ref)
                scope = config["scope"]
                guid_args = list(function(config["name"], "guid").values())
                assert accessor(guid_args[0]) == f"{scope}.id", f"{file}:{name} name is not guid(scope.id, ...)"
                assert role_ref in [accessor(a) for a in guid_args], f"{file}:{name} name must include the role"
            elif r["type"] == "Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments":
                role_var = re.fullmatch(r".*/sqlRoleDefinitions/\$\{(\w+)\}", config["properties"]["roleDefinitionId"])
                assert role_var, f"{file}:{name}"
                role_id = b.var(role_var.group(1))
                scope = config["parent"]
            else:
                continue
            scope_type = b.resources[scope]["type"]
            principal = accessor(config["properties"]["principalId"])
            assert principal in PRINCIPALS, f"{file}:{name} assigns to unknown principal {principal}"
            assert role_id in ROLE, f"{file}:{name}: unexpected role id {role_id}"
            found.append((file, PRINCIPALS[principal], ROLE[role_id], scope_type, condition(r)))
    return found


def test_every_identity_has_exactly_the_data_roles_it_needs(bicep: dict[str, Bicep]) -> None:
    assignments = _role_assignments(bicep)
    got = [(principal, role, scope) for _, principal, role, scope, _ in assignments]
    assert len(got) == len(set(got)), "duplicate role assignment"
    assert set(got) == EXPECTED_ROLES, f"missing: {EXPECTED_ROLES - set(got)}; extra: {set(got) - EXPECTED_ROLES}"


def test_the_developer_roles_are_skipped_without_a_principal(bicep: dict[str, Bicep]) -> None:
    for file in ("app/rbac.bicep", "app/iot-hub-rbac.bicep", "core/maps/maps-account.bicep"):
        assert "!empty(userPrincipalId)" in bicep[file].text.replace(" ", ""), file
    for _, principal, role, _, when in _role_assignments(bicep):
        if principal == "user":
            assert when == "grantUser", f"{role} for the developer must be conditional"
        elif role == "DPS enrollment group key reader (custom)":
            assert when == "developmentKeys", "the app reads enrollment group keys in development mode only"
        else:
            assert when is None, f"{role} for {principal} must always be assigned"


def test_what_the_triggers_use_is_covered_by_a_role(trigger_bindings: list[dict[str, Any]]) -> None:
    needs = {"Storage Blob Data Owner", "Cosmos DB Built-in Data Contributor", "Monitoring Metrics Publisher"}
    kinds = {b["type"] for b in trigger_bindings}
    if "eventHubTrigger" in kinds:
        needs.add("Azure Event Hubs Data Receiver")
    if "queueTrigger" in kinds or "queue" in kinds:
        needs.add("Storage Queue Data Contributor")
    granted = {role for principal, role, _ in EXPECTED_ROLES if principal == "function"}
    assert needs <= granted


@pytest.mark.parametrize("role_id", sorted(FORBIDDEN_ROLES), ids=lambda r: FORBIDDEN_ROLES[r])
def test_no_broad_role_appears_anywhere(bicep: dict[str, Bicep], role_id: str) -> None:
    for file, b in bicep.items():
        assert role_id not in b.text, f"{file} uses {FORBIDDEN_ROLES[role_id]}"
