"""The app's metrics: instruments made from `metrics.json` (the one source of truth for their names), cheap to record.

Every instrument comes from the OpenTelemetry *API* (`opentelemetry.metrics.get_meter`), which works before and
without a provider: until one is installed a record is a no-op; in Azure the Azure Monitor distro installs one
(shared/observability/setup.py), locally setup.py builds an SDK MeterProvider around `local_reader()`, which
`make dev`, the local function host's `/metrics` and `make demo`'s report read back through `snapshot()`.
Nothing here imports the SDK at module import (cold start): only the functions that build a reader do.

Record once per batch and attribute set, never per message: `add("carlink.ingest.messages", report.accepted,
{"outcome": "accepted"})`. A name missing from the catalogue raises KeyError: there is no second list of names.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from shared import trigger_metadata

if TYPE_CHECKING:
    import httpx
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricReader, MetricsData

log = logging.getLogger(__name__)

CATALOGUE_PATH: Final = Path(__file__).with_name("metrics.json")
Attributes = Mapping[str, str]
C2D_UNDELIVERABLE: Final = "carlink.iothub.c2d_undeliverable"  # recorded from several places


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """One catalogue entry: what docs/operations.md, the workbook and the alerts know the metric by."""

    name: str
    instrument: str  # counter | histogram
    unit: str
    description: str
    attributes: Mapping[str, str]  # attribute name → what its values are
    buckets: tuple[float, ...] | None = None


@functools.cache
def catalogue() -> dict[str, MetricSpec]:
    """The metrics of `metrics.json` by name (read once per process)."""
    raw = json.loads(CATALOGUE_PATH.read_text(encoding="utf-8"))
    out: dict[str, MetricSpec] = {}
    for item in raw["metrics"]:
        buckets = item.get("buckets")
        out[item["name"]] = MetricSpec(
            item["name"],
            item["instrument"],
            item["unit"],
            item["description"],
            dict(item.get("attributes", {})),
            tuple(float(b) for b in buckets) if buckets else None,
        )
    return out


def meter_name() -> str:
    return str(json.loads(CATALOGUE_PATH.read_text(encoding="utf-8"))["meter"])


class _Instruments:
    """The catalogue's instruments from one meter, made on first use of each."""

    def __init__(self, provider: MeterProvider | None) -> None:
        from opentelemetry import metrics as otel

        name = meter_name()
        self.meter = provider.get_meter(name) if provider is not None else otel.get_meter(name)
        self.made: dict[str, Any] = {}

    def get(self, name: str) -> Any:
        made = self.made.get(name)
        if made is None:
            spec = catalogue()[name]  # KeyError: not in metrics.json
            if spec.instrument == "counter":
                made = self.meter.create_counter(name, spec.unit, spec.description)
            elif spec.instrument == "histogram":
                made = self.meter.create_histogram(
                    name, spec.unit, spec.description, explicit_bucket_boundaries_advisory=spec.buckets
                )
            else:
                raise ValueError(f"{name}: unknown instrument kind {spec.instrument!r}")
            self.made[name] = made
        return made


_instruments: _Instruments | None = None
_provider: MeterProvider | None = None


def _current() -> _Instruments:
    global _instruments
    if _instruments is None:
        _instruments = _Instruments(_provider)
    return _instruments


def use_meter_provider(provider: MeterProvider | None) -> None:
    """Record into `provider` from now on (None: the global one). Tests give each test its own provider with an
    InMemoryMetricReader; the global provider can be set only once per process."""
    global _instruments, _provider
    _provider, _instruments = provider, None


def add(name: str, amount: float, attributes: Attributes | None = None) -> None:
    """Add to a counter of the catalogue; nothing for 0 (a batch without duplicates records none)."""
    if amount:
        _current().get(name).add(amount, attributes)


def record(name: str, value: float, attributes: Attributes | None = None) -> None:
    """Record one value of a histogram of the catalogue."""
    _current().get(name).record(value, attributes)


# --- Event Hubs batches -----------------------------------------------------------------------------------------


def partition_of(events: Sequence[Any]) -> str:
    """The batch's Event Hubs partition id (shared/trigger_metadata.py); "unknown" when the metadata lacks it."""
    return trigger_metadata.partition_of(events) or "unknown"


def batch_lag_seconds(events: Sequence[Any], now: dt.datetime | None = None) -> float | None:
    """Seconds from the batch's oldest event enqueued (the first: a partition is read in order) until now. The
    worker hands naive UTC datetimes."""
    if not events:
        return None
    enqueued = getattr(events[0], "enqueued_time", None)
    if not isinstance(enqueued, dt.datetime):
        return None
    if enqueued.tzinfo is None:
        enqueued = enqueued.replace(tzinfo=dt.UTC)
    return max(0.0, ((now or dt.datetime.now(dt.UTC)) - enqueued).total_seconds())


def observe_batch(function: str, events: Sequence[Any], committed: bool) -> None:
    """One Event Hubs batch finished: its lag (when committed) and the batch count of its partition."""
    partition = partition_of(events)
    attributes = {"function": function, "partition": partition}
    if committed:
        lag = batch_lag_seconds(events)
        if lag is not None:
            record("carlink.ingest.lag", lag, attributes)
    add("carlink.ingest.batches", 1, {**attributes, "outcome": "committed" if committed else "failed"})


def http_outcome(status: int | None) -> str:
    """The `outcome` attribute of carlink.graph.requests / carlink.maps.requests for an HTTP status."""
    if status is None:
        return "no_response"
    if status == 429:
        return "throttled"
    if status < 400:
        return "ok"
    return "client_error" if status < 500 else "server_error"


def counting_transport(inner: httpx.AsyncBaseTransport, metric: str) -> httpx.AsyncBaseTransport:
    """`inner`, counting every HTTP attempt into `metric` by outcome. Put under an SDK's retry middleware (the
    Graph SDK's), it sees the 429s the middleware retries, which the caller never does."""
    import httpx

    class Counting(httpx.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            try:
                response = await inner.handle_async_request(request)
            except httpx.TransportError:
                add(metric, 1, {"outcome": http_outcome(None)})
                raise
            add(metric, 1, {"outcome": http_outcome(response.status_code)})
            return response

        async def aclose(self) -> None:
            await inner.aclose()

    return Counting()


def since(start: float) -> float:
    """Seconds since a `time.monotonic()` reading."""
    return time.monotonic() - start


# --- The local view: one in-memory reader per process -----------------------------------------------------------

_local_reader: InMemoryMetricReader | None = None


def local_reader() -> InMemoryMetricReader:
    """The reader the local stack's MeterProvider collects into (setup.py builds the provider around it). It
    hands out deltas, which `local_view()` adds up, so a stack can start its view from zero (`reset`)."""
    global _local_reader
    if _local_reader is None:
        from opentelemetry.sdk.metrics import Counter, Histogram
        from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader

        delta = AggregationTemporality.DELTA
        _local_reader = InMemoryMetricReader(preferred_temporality={Counter: delta, Histogram: delta})
    return _local_reader


def configure_local_metrics(environ: Mapping[str, str] | None = None) -> None:
    """Install a global SDK MeterProvider around `local_reader()` (and `exporting_readers()`) unless one is
    installed already (setup.py's `configure_local` does the same, whichever comes first wins): the local stack's
    metrics are always on."""
    from opentelemetry import metrics as otel
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider

    if isinstance(otel.get_meter_provider(), SdkMeterProvider):
        return
    otel.set_meter_provider(SdkMeterProvider(metric_readers=[local_reader(), *exporting_readers(environ)]))


def exporting_readers(environ: Mapping[str, str] | None = None) -> list[MetricReader]:
    """Locally, besides the in-memory view: `OTEL_METRICS_EXPORTER=console` prints every metric each
    `OTEL_METRIC_EXPORT_INTERVAL` ms (default 60 s); `otlp` sends them to `OTEL_EXPORTER_OTLP_ENDPOINT` when
    opentelemetry-exporter-otlp is installed (not a dependency of the app)."""
    import os

    env = os.environ if environ is None else environ
    wanted = env.get("OTEL_METRICS_EXPORTER", "").strip().lower()
    if wanted not in ("console", "otlp"):
        return []
    from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricExporter, PeriodicExportingMetricReader

    exporter: MetricExporter
    if wanted == "console":
        import sys

        exporter = ConsoleMetricExporter(out=sys.stdout)  # the stream of now, not of the SDK's import
    else:
        try:
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPMetricExporter,
            )
        except ImportError:
            log.warning("OTEL_METRICS_EXPORTER=otlp needs opentelemetry-exporter-otlp; metrics stay local")
            return []
        exporter = OTLPMetricExporter()
    return [PeriodicExportingMetricReader(exporter)]


@dataclass(frozen=True, slots=True)
class Series:
    """One metric's value for one attribute set, as the local view shows it."""

    attributes: Mapping[str, str]
    value: float = 0.0  # counter total; histogram sum
    count: int = 0  # histogram only
    minimum: float | None = None
    maximum: float | None = None
    bounds: tuple[float, ...] = ()
    bucket_counts: tuple[int, ...] = ()

    def plus(self, other: Series) -> Series:
        """This and another of the same metric together (counter values, histogram buckets, min and max)."""
        if not self.bucket_counts:
            return Series(self.attributes, self.value + other.value)
        mins = [m for m in (self.minimum, other.minimum) if m is not None]
        maxs = [m for m in (self.maximum, other.maximum) if m is not None]
        return Series(
            self.attributes,
            self.value + other.value,
            self.count + other.count,
            min(mins) if mins else None,
            max(maxs) if maxs else None,
            self.bounds,
            tuple(a + b for a, b in zip(self.bucket_counts, other.bucket_counts, strict=True)),
        )


def snapshot(reader: InMemoryMetricReader | None = None) -> dict[str, list[Series]]:
    """Every catalogue metric `reader` holds, by name; without one, the local stack's view since its reset."""
    if reader is None:
        return local_view().collect()
    from opentelemetry.sdk.metrics.export import HistogramDataPoint, NumberDataPoint

    data: MetricsData | None = reader.get_metrics_data()
    out: dict[str, list[Series]] = {}
    known = catalogue()
    for resource in data.resource_metrics if data is not None else ():
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name not in known:
                    continue
                rows = out.setdefault(metric.name, [])
                for point in metric.data.data_points:
                    attributes = {k: str(v) for k, v in (point.attributes or {}).items()}
                    if isinstance(point, HistogramDataPoint):
                        rows.append(
                            Series(
                                attributes,
                                float(point.sum),
                                int(point.count),
                                point.min if point.count else None,
                                point.max if point.count else None,
                                tuple(point.explicit_bounds),
                                tuple(point.bucket_counts),
                            )
                        )
                    elif isinstance(point, NumberDataPoint):
                        rows.append(Series(attributes, float(point.value)))
    return out


class LocalView:
    """The local stack's metrics: the deltas `local_reader()` hands out, added up since the last `reset()`. The
    status line, the local host's `/admin/metrics` and the demo's report all read this one view."""

    def __init__(self, reader: InMemoryMetricReader) -> None:
        self.reader = reader
        self.series: dict[tuple[str, tuple[tuple[str, str], ...]], Series] = {}

    def collect(self) -> dict[str, list[Series]]:
        for name, rows in snapshot(self.reader).items():
            for row in rows:
                key = (name, tuple(sorted(row.attributes.items())))
                known = self.series.get(key)
                self.series[key] = row if known is None else known.plus(row)
        out: dict[str, list[Series]] = {}
        for (name, _), row in sorted(self.series.items()):
            out.setdefault(name, []).append(row)
        return out

    def reset(self) -> None:
        """From now on (a stack starting): what was recorded before is dropped."""
        self.collect()
        self.series.clear()


_local_view: LocalView | None = None


def local_view() -> LocalView:
    global _local_view
    if _local_view is None:
        _local_view = LocalView(local_reader())
    return _local_view


def total(rows: Iterable[Series], **where: str) -> float:
    """Sum of counter values (or histogram counts) of the rows whose attributes match `where`."""
    return sum(
        (row.count if row.bucket_counts else row.value)
        for row in rows
        if all(row.attributes.get(k) == v for k, v in where.items())
    )


def merged(rows: Iterable[Series], **where: str) -> Series | None:
    """One histogram of the matching rows (e.g. every partition's lag together)."""
    chosen = [r for r in rows if r.bucket_counts and all(r.attributes.get(k) == v for k, v in where.items())]
    if not chosen:
        return None
    out = replace(chosen[0], attributes=dict(where))
    for row in chosen[1:]:
        out = out.plus(row)
    return out


def percentile(series: Series, q: float) -> float | None:
    """The q-quantile (0..1) of a histogram, interpolated linearly inside its bucket and clamped to the recorded
    min and max: as exact as the catalogue's bucket bounds (docs/operations.md "Metrics locally")."""
    if not series.count:
        return None
    rank = q * series.count
    seen = 0
    lows = (series.minimum if series.minimum is not None else 0.0, *series.bounds)
    highs = (*series.bounds, series.maximum if series.maximum is not None else series.bounds[-1])
    for count, low, high in zip(series.bucket_counts, lows, highs, strict=True):
        if count and seen + count >= rank:
            low = max(low, series.minimum if series.minimum is not None else low)
            high = min(high, series.maximum if series.maximum is not None else high)
            value = low + (high - low) * ((rank - seen) / count)
            return min(max(value, series.minimum or 0.0), series.maximum if series.maximum is not None else value)
        seen += count
    return series.maximum


def as_json(view: Mapping[str, list[Series]]) -> dict[str, Any]:
    """The snapshot as JSON (the local host's `/metrics`): counters by attribute set; histograms with count, sum,
    min, max and p50/p95/p99 estimates."""
    out: dict[str, Any] = {}
    for name, rows in sorted(view.items()):
        items: list[dict[str, Any]] = []
        for row in rows:
            item: dict[str, Any] = {"attributes": dict(row.attributes)}
            if row.bucket_counts:
                item.update(count=row.count, sum=row.value, min=row.minimum, max=row.maximum)
                item.update({f"p{int(q * 100)}": percentile(row, q) for q in (0.5, 0.95, 0.99)})
            else:
                item["value"] = row.value
            items.append(item)
        out[name] = {"unit": catalogue()[name].unit, "series": items}
    return out


def markdown_table() -> str:
    """The catalogue as docs/operations.md's metrics table (`python -m shared.observability.metrics --markdown`;
    tests/unit/test_metrics_catalogue.py compares them)."""
    lines = ["| metric | kind | unit | attributes | meaning |", "|---|---|---|---|---|"]
    for spec in catalogue().values():
        attributes = "<br>".join(f"`{k}`: {v}" for k, v in spec.attributes.items()).replace("|", "\\|") or "–"
        lines.append(f"| `{spec.name}` | {spec.instrument} | `{spec.unit}` | {attributes} | {spec.description} |")
    return "\n".join(lines)


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--markdown"]:
        raise SystemExit("usage: python -m shared.observability.metrics --markdown")
    print(markdown_table())
