"""checkov's Bicep policies pass on infra/, or each exception is suppressed inside the resource with a reason.

checkov runs once per session from its own venv (.venv-infra, `make infra-check`): it pins pycep-parser 0.5.1,
which cannot parse `extension` declarations, so the Microsoft Graph module (no Azure resource) is the only file it
may fail to parse. A file it fails to parse is silently unchecked, hence the checks on what it actually scanned.
"""

from __future__ import annotations

import re
from pathlib import Path

from infra_model import INFRA, Bicep, CheckovReport

# Resource types checkov 3.3.30 has Bicep/ARM policies for, all of which infra/ creates.
SCANNED_TYPES = {
    "Microsoft.Storage/storageAccounts",
    "Microsoft.DocumentDB/databaseAccounts",
    "Microsoft.EventHub/namespaces",
    "Microsoft.Web/sites",
    "Microsoft.Web/serverfarms",
    "Microsoft.KeyVault/vaults",
    "Microsoft.KeyVault/vaults/keys",
}
SUPPRESSION = re.compile(r"//\s*checkov:skip=(CKV2?_[A-Z]+_\d+):\s*(\S.*)")


def _file(result: dict[str, object]) -> str:
    return str(result["file_path"]).lstrip("/")


def test_checkov_reports_no_failed_check(checkov_report: CheckovReport) -> None:
    failures = [f"{r['check_id']} {r['resource']} ({_file(r)}): {r['check_name']}" for r in checkov_report.failed]
    assert not failures, (
        "checkov failed checks (fix them, or suppress inside the resource with a reason):\n" + "\n".join(failures)
    )


def test_checkov_parsed_everything_but_the_graph_extension_module(
    checkov_report: CheckovReport, bicep: dict[str, Bicep]
) -> None:
    unparsed = {Path(p).resolve().relative_to(INFRA).as_posix() for p in checkov_report.parsing_errors}
    extension_files = {file for file, b in bicep.items() if b.tree.get("extensions")}
    assert unparsed <= extension_files, f"checkov could not parse {sorted(unparsed - extension_files)}"
    for file in extension_files:
        types = {r["type"] for r in bicep[file].resources.values()}
        assert all(t.startswith("Microsoft.Graph/") for t in types), f"{file} hides Azure resources from checkov"


def test_checkov_scanned_every_resource_type_it_has_policies_for(checkov_report: CheckovReport) -> None:
    results = checkov_report.passed + checkov_report.failed + checkov_report.skipped
    scanned = {str(r["resource"]).rsplit(".", 1)[0] for r in results}
    assert scanned >= SCANNED_TYPES, f"not scanned: {sorted(SCANNED_TYPES - scanned)}"


def test_every_suppression_has_a_reason_and_suppresses_a_real_finding(
    checkov_report: CheckovReport, bicep: dict[str, Bicep]
) -> None:
    # GIVEN every `// checkov:skip=ID: reason` in infra/ WHEN checkov runs THEN it reports that check skipped in
    # that file (a suppression outside a resource body, or for a check that no longer fires, is dead weight)
    written = {(file, m.group(1)) for file, b in bicep.items() for m in SUPPRESSION.finditer(b.text)}
    bare = [(file, line) for file, b in bicep.items() for line in b.text.splitlines() if "checkov:skip" in line]
    assert len(bare) == len(written), f"suppressions without a reason or malformed: {bare}"
    reported = {(_file(r), str(r["check_id"])) for r in checkov_report.skipped}
    assert written == reported, f"written only: {written - reported}; reported only: {reported - written}"
