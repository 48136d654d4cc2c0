"""What the Functions host will index, and the telemetry trigger called the way the host calls it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from devstack.function_index import indexed_functions
from shared.containers import partition_keys
from shared.per_loop import PerLoop
from shared.stores.memory import MemoryDeadLetterSink, MemoryDocumentStore
from shared.telemetry import runtime
from shared.telemetry.ingest import TelemetryIngestor
from tests.factories import drive, event

ROOT = Path(__file__).parents[2]


def functions_by_name() -> dict[str, Any]:
    return indexed_functions()


def test_every_module_in_functions_registers_its_blueprint() -> None:
    modules = {p.stem for p in (ROOT / "functions").glob("*.py") if p.stem != "__init__"}
    registered = {
        f.get_user_function().__module__.removeprefix("functions.")
        for name, f in indexed_functions().items()
        if name != "http_app_func"  # the HTTP API, registered by func.AsgiFunctionApp itself
    }
    assert registered == modules


def test_telemetry_trigger_bindings_are_what_the_host_indexes() -> None:
    fn = functions_by_name()["ingest_telemetry"]
    bindings = [json.loads(b) for b in fn.get_raw_bindings()]
    assert bindings == [
        {
            "direction": "IN",
            "dataType": "BINARY",
            "type": "eventHubTrigger",
            "name": "events",
            "connection": "EVENTHUB",
            "eventHubName": "%TELEMETRY_EVENTHUB%",
            "cardinality": "MANY",
            "consumerGroup": "functions",
        }
    ]


def test_telemetry_trigger_has_a_retry_policy() -> None:
    fn = functions_by_name()["ingest_telemetry"]
    # the Python worker reports this setting to the host as the function's retry options
    retry = fn.get_settings_dict("retry_policy")
    assert retry["strategy"] == "exponential_backoff"
    assert retry["max_retry_count"] == "-1"  # until the store answers: telemetry is never dropped


def test_host_json_batches_event_hubs_and_uses_bundle_4() -> None:
    host = json.loads((ROOT / "host.json").read_text())
    assert host["extensionBundle"]["version"] == "[4.*, 5.0.0)"
    assert host["extensions"]["eventHubs"]["maxEventBatchSize"] == 100
    assert host["extensions"]["eventHubs"]["batchCheckpointFrequency"] == 1


@pytest.fixture
def memory_runtime(monkeypatch: pytest.MonkeyPatch) -> MemoryDocumentStore:
    store = MemoryDocumentStore(partition_keys())
    letters = MemoryDeadLetterSink()
    monkeypatch.setattr(runtime, "ingestor", PerLoop(lambda: TelemetryIngestor(store, letters)))
    return store


async def test_trigger_ingests_a_batch_of_event_hub_events(memory_runtime: MemoryDocumentStore) -> None:
    fn = functions_by_name()["ingest_telemetry"].get_user_function()
    events = [
        event("car-001", drive(1, 0, speed=42.0), enqueued_s=1, sequence_number=10),
        event("car-002", drive(1, 0, speed=7.0), enqueued_s=1, sequence_number=11),
        event(None, drive(2, 0, speed=1.0), enqueued_s=1, sequence_number=12),  # no device id: dead-lettered
    ]
    await fn(events)
    speeds = {
        d["vehicleId"]: d["state"]["signals"]["Vehicle.Speed"]["value"] for d in memory_runtime.documents("vehicles")
    }
    assert speeds == {"car-001": 42.0, "car-002": 7.0}


def test_importing_the_app_stays_light() -> None:
    # Cold start: the SDKs for Cosmos, Storage, identity, Graph and IoT Hub, and the HTTP API (FastAPI, Starlette,
    # pydantic) load on first use, not at import.
    code = (
        "import sys, function_app; heavy = [m for m in ('azure.cosmos', 'azure.storage.blob', 'azure.identity', "
        "'msgraph', 'azure.iot.hub', 'aiohttp', 'pydantic', 'fastapi', 'starlette') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
