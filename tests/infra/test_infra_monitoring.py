"""The fleet health workbook and alert rules (infra/app/monitoring.bicep) against their sources: every metric they
query is in shared/observability/metrics.json, every alert has a described threshold parameter and a runbook
section in docs/operations.md, and main.bicep deploys them with the action group parameter."""

from __future__ import annotations

import re
from typing import Any

import pytest
from infra_model import ROOT, Bicep, accessor

from shared.observability import metrics

MONITORING = "app/monitoring.bicep"
METRIC = re.compile(r"carlink\.[a-z0-9_.]*[a-z0-9_]")
OPERATIONS = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")


def queries(b: Bicep) -> dict[str, str]:
    """Every KQL query of the file: the workbook's query variables and each alert rule's query."""
    found = {name: v["value"] for name, v in b.variables.items() if name.endswith("Query")}
    found.update({f"alert {rule['name']}": rule["query"] for rule in b.var("alertRules")})
    return found


def sections(markdown: str) -> dict[str, str]:
    """Third-level sections by heading."""
    return {part.split("\n", 1)[0]: part for part in markdown.split("\n### ")[1:]}


def anchor_of(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation but hyphens dropped, spaces to hyphens."""
    return re.sub(r"[^a-z0-9 -]", "", heading.lower()).replace(" ", "-")


@pytest.fixture(scope="module")
def monitoring(bicep: dict[str, Bicep]) -> Bicep:
    return bicep[MONITORING]


def test_the_workbook_and_alerts_query_only_catalogue_metrics(monitoring: Bicep) -> None:
    named = {name for query in queries(monitoring).values() for name in METRIC.findall(query)}
    assert named, "no metric found in the queries: the scan is broken"
    assert named <= set(metrics.catalogue()), f"not in metrics.json: {named - set(metrics.catalogue())}"
    # and nothing elsewhere in the file names a metric the catalogue lacks (the workbook's text included)
    assert set(METRIC.findall(monitoring.text)) <= set(metrics.catalogue())


def test_the_workbook_shows_fleet_health(monitoring: Bicep) -> None:
    wanted = {  # the fleet health: lag, throughput, errors by reason, RU, Graph throttling, commands
        "carlink.ingest.lag",
        "carlink.ingest.batches",
        "carlink.ingest.messages",
        "carlink.cosmos.request_charge",
        "carlink.graph.requests",
        "carlink.commands.outcomes",
        "carlink.commands.latency",
    }
    panels = [item["content"]["query"] for item in monitoring.var("workbookContent")["items"] if item["type"] == 3]
    shown = {name for panel in panels for name in METRIC.findall(monitoring.var(panel))}
    assert wanted <= shown
    [workbook] = monitoring.resources_of_type("Microsoft.Insights/workbooks").values()
    assert workbook["config"]["kind"] == "shared"


def test_every_alert_has_a_runbook_and_described_thresholds(monitoring: Bicep) -> None:
    rules = monitoring.var("alertRules")
    assert [r["name"] for r in rules] == [
        "ingestion-lag",
        "partition-not-progressing",
        "dead-letter-rate",
        "throttling-rate",
        "command-failure-rate",
        "function-failures",
    ]
    runbooks = {anchor_of(h): body for h, body in sections(OPERATIONS).items() if h.startswith("Alert: ")}
    for rule in rules:
        anchor = f"alert-{rule['name']}"
        assert f"docs/operations.md#{anchor}" in rule["description"]
        assert anchor in runbooks, f"docs/operations.md has no runbook section #{anchor}"
        for part in ("**What it means.**", "**What to look at.**", "**How to"):
            assert part in runbooks[anchor], f"#{anchor}: {part}"
    # every threshold the queries use is a parameter with a range, and the docs' alert table names it
    thresholds = {p for rule in rules for p in re.findall(r"\$\{(\w+)", rule["query"])}
    assert thresholds
    for name in thresholds:
        param = monitoring.parameters[name]
        assert any(d["type"] == "min_value" for d in param["decorators"]), f"{name} has no @minValue"
        assert f"`{name}`" in OPERATIONS, f"docs/operations.md does not name the threshold {name}"


def test_alert_rules_notify_the_action_group_parameter(monitoring: Bicep) -> None:
    [alerts] = monitoring.resources_of_type("Microsoft.Insights/scheduledQueryRules").values()
    assert alerts["config"]["loop_type"]["detail"]["array_name"] == "alertRules"
    properties: dict[str, Any] = alerts["config"]["config"]["properties"]
    assert "actionGroupId" in str(properties["actions"])
    assert properties["enabled"] == "alertsEnabled"
    assert "applicationInsights" in str(properties["scopes"])


def test_main_deploys_the_workbook_and_alerts_with_an_action_group_parameter(main_bicep: Bicep, module_of: Any) -> None:
    _, declaration, _ = module_of("main.bicep", MONITORING)
    params = declaration["config"]["params"]
    assert params["actionGroupId"] == "alertActionGroupId"
    assert main_bicep.parameters["alertActionGroupId"]["default"] == ""
    assert accessor(params["applicationInsightsName"]) == "monitoring.outputs.applicationInsightsName"


def test_checkov_passes_the_monitoring_file(checkov_report: Any) -> None:
    failed = [c for c in checkov_report.failed if c.get("file_path", "").endswith("monitoring.bicep")]
    assert failed == []
    assert not [e for e in checkov_report.parsing_errors if "monitoring.bicep" in str(e)]
