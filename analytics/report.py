"""`make report`: the fleet analyst's report computed locally. The measures of analytics/measures.py (the Power BI
model's, by name) over the lake's Parquet with DuckDB, rendered with matplotlib as a multi-page PDF and one PNG per
page, and printed as a text table.

    figures = compute(Path(".demo/lake"))       # Figures: totals, per day, breakdowns
    render(figures, Path(".demo/report"))       # report.pdf, 1-fleet-activity.png, ...
    print(figures.to_text())
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

from analytics.lake import LakeViews, open_lake
from analytics.measures import BY_NAME, MEASURES, Measure, Ratio

if TYPE_CHECKING:
    import duckdb
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure as MplFigure

Value = float | None
Key = str
# The breakdowns the report shows besides the per-day series: (measure, column of its source).
BREAKDOWNS: Final = (
    ("DTC Alerts", "code"),
    ("Alerts", "kind"),
    ("Trips", "start_hour"),
    ("Commands", "status"),
    ("Commands", "name"),
    ("Geofence Events", "event"),
    ("Car Requests", "action"),
)
TOP_DTCS: Final = 10


@dataclass
class Figures:
    """The report's numbers. `by[(measure, column)]` maps each value of the column (as text; per-day series use
    `date`, an ISO day) to the measure."""

    totals: dict[str, Value] = field(default_factory=dict)
    by: dict[tuple[str, str], dict[Key, Value]] = field(default_factory=dict)
    lake: LakeViews = field(default_factory=LakeViews)

    def per_day(self, measure: str) -> dict[Key, Value]:
        return self.by[(measure, "date")]

    def days(self) -> list[str]:
        return sorted({day for (_, column), values in self.by.items() if column == "date" for day in values})

    def to_text(self) -> str:
        """The totals, the per-day table and the breakdowns, as a fixed-width text table."""
        lines = [f"Lake: {sum(len(f) for f in self.lake.files.values())} Parquet files"]
        lines += [f"  skipped {path} ({why})" for path, why in self.lake.skipped]
        width = max(len(m.name) for m in MEASURES)
        lines.append("")
        lines.append(f"{'measure':<{width}}  {'total':>12}  unit")
        for m in MEASURES:
            lines.append(f"{m.name:<{width}}  {_fmt(self.totals[m.name]):>12}  {m.unit}")
        days = self.days()
        if days:
            lines.append("")
            lines.append(f"{'per day':<{width}}  " + "  ".join(f"{d:>10}" for d in days))
            for m in MEASURES:
                series = self.per_day(m.name)
                lines.append(f"{m.name:<{width}}  " + "  ".join(f"{_fmt(series.get(d)):>10}" for d in days))
        for (name, column), values in self.by.items():
            if column == "date" or not values:
                continue
            lines.append("")
            lines.append(f"{name} by {column}: " + ", ".join(f"{k}={_fmt(v)}" for k, v in _ordered(values)))
        return "\n".join(lines)


def compute(root: Path) -> Figures:
    """Every measure's total and per-day series, and the breakdowns, over the lake directory `root`."""
    import duckdb

    with duckdb.connect() as con:
        figures = Figures(lake=open_lake(root, con))
        for m in MEASURES:
            figures.totals[m.name] = scalar(con, m)
            figures.by[(m.name, "date")] = breakdown(con, m, "date")
        for name, column in BREAKDOWNS:
            figures.by[(name, column)] = breakdown(con, BY_NAME[name], column)
    return figures


def scalar(con: duckdb.DuckDBPyConnection, measure: Measure | Ratio) -> Value:
    """The measure over the whole lake."""
    if isinstance(measure, Ratio):
        return _divide(scalar(con, BY_NAME[measure.numerator]), scalar(con, BY_NAME[measure.denominator]), measure)
    row = con.execute(f"SELECT {measure.expr} FROM {measure.source}").fetchone()  # noqa: S608 (our own SQL)
    return _number(row[0] if row else None)


def breakdown(con: duckdb.DuckDBPyConnection, measure: Measure | Ratio, column: str) -> dict[Key, Value]:
    """The measure per value of `column` (rows where it is NULL: key "(none)"); only keys with rows appear."""
    if isinstance(measure, Ratio):
        num = breakdown(con, BY_NAME[measure.numerator], column)
        den = breakdown(con, BY_NAME[measure.denominator], column)
        return {k: _divide(num.get(k), den.get(k), measure) for k in sorted(num.keys() | den.keys())}
    sql = f'SELECT "{column}", {measure.expr} FROM {measure.source} GROUP BY ALL'  # noqa: S608 (our own SQL)
    return {_key(k): _number(v) for k, v in con.execute(sql).fetchall()}


def _divide(num: Value, den: Value, ratio: Ratio) -> Value:
    """DAX's DIVIDE(COALESCE(num, 0), den) * factor: nothing where there is no denominator, 0 where no numerator."""
    if not den:
        return None
    return ratio.factor * (num or 0.0) / den


def _number(value: object) -> Value:
    return None if value is None else float(value)  # type: ignore[arg-type]  # DuckDB's numbers


def _key(value: object) -> Key:
    if value is None:
        return "(none)"
    if isinstance(value, dt.date):
        return value.isoformat()
    return str(value)


def _fmt(value: Value) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value == int(value) and abs(value) >= 1 else f"{value:,.3g}"


def _ordered(values: dict[Key, Value]) -> list[tuple[Key, Value]]:
    """Numeric keys (hours) in order, others by value, largest first."""
    if all(k.isdigit() for k in values):
        return sorted(values.items(), key=lambda kv: int(kv[0]))
    return sorted(values.items(), key=lambda kv: (-(kv[1] or 0.0), kv[0]))


# --- rendering ------------------------------------------------------------------------------------------------


PAGES: Final = (
    "fleet-activity",
    "distance-driving-time",
    "energy",
    "charging",
    "alerts-dtcs",
    "trips-by-hour",
    "geofences-commands",
    "agenda-teams",
)


def render(figures: Figures, out: Path) -> list[Path]:
    """report.pdf and one PNG per page in `out`; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.backends.backend_pdf import PdfPages

    out.mkdir(parents=True, exist_ok=True)
    written = []
    pdf_path = out / "report.pdf"
    with PdfPages(pdf_path) as pdf:
        for number, (name, page) in enumerate(zip(PAGES, _pages(figures), strict=True), start=1):
            png = out / f"{number}-{name}.png"
            page.savefig(png, dpi=110)
            pdf.savefig(page)
            written.append(png)
            import matplotlib.pyplot as plt

            plt.close(page)
    return [pdf_path, *written]


def _pages(figures: Figures) -> list[MplFigure]:
    import matplotlib.pyplot as plt

    days = figures.days()

    def page(title: str, panels: int) -> tuple[MplFigure, list[Axes]]:
        fig, axes = plt.subplots(1, panels, figsize=(11.7, 5.2), squeeze=False)
        fig.suptitle(title, fontsize=14, fontweight="bold")
        fig.subplots_adjust(bottom=0.2, wspace=0.3)
        return fig, list(axes[0])

    def per_day(ax: Axes, measures: list[str], unit: str) -> None:
        width = 0.8 / max(len(measures), 1)
        for i, name in enumerate(measures):
            series = figures.per_day(name)
            xs = [d + (i - (len(measures) - 1) / 2) * width for d in range(len(days))]
            ax.bar(xs, [series.get(day) or 0.0 for day in days], width, label=f"{name} ({_fmt(figures.totals[name])})")
        ax.set_xticks(range(len(days)), days, rotation=30, ha="right")
        ax.set_xlim(-0.75, max(len(days), 5) - 0.25)  # a bar of a one-day lake is not the page's width
        ax.set_ylabel(unit)
        ax.legend(loc="upper left", fontsize=8)
        if not days:
            _empty(ax)

    def bars(ax: Axes, values: list[tuple[Key, Value]], title: str, horizontal: bool = False) -> None:
        keys, heights = [k for k, _ in values], [v or 0.0 for _, v in values]
        if horizontal:
            ax.barh(keys[::-1], heights[::-1], color="tab:red")
        else:
            ax.bar(keys, heights)
            ax.tick_params(axis="x", rotation=30)
        ax.set_title(title, fontsize=10)
        if not values:
            _empty(ax)

    out = []
    fig, (ax,) = page("Fleet activity per day", 1)
    per_day(ax, ["Fleet Size", "Active Cars"], "cars")
    out.append(fig)

    fig, (a1, a2) = page("Distance and driving time per day", 2)
    per_day(a1, ["Distance km"], "km")
    per_day(a2, ["Driving Hours"], "hours")
    out.append(fig)

    fig, (a1, a2) = page("Energy per 100 km", 2)
    per_day(a1, ["Energy per 100 km"], "kWh / 100 km")
    per_day(a2, ["Battery % per 100 km"], "% state of charge / 100 km")
    out.append(fig)

    fig, (ax,) = page("Charging sessions per day", 1)
    per_day(ax, ["Charging Sessions"], "sessions")
    out.append(fig)

    fig, (a1, a2) = page("Alerts per 1,000 km and the top DTCs", 2)
    per_day(a1, ["Alerts per 1000 km"], "alerts / 1,000 km")
    top = _ordered(figures.by[("DTC Alerts", "code")])[:TOP_DTCS]
    bars(a2, top, f"Top DTCs (of {_fmt(figures.totals['DTC Alerts'])} DTC alerts)", horizontal=True)
    out.append(fig)

    fig, (ax,) = page("Trips by hour of day (UTC)", 1)
    hours = figures.by[("Trips", "start_hour")]
    bars(ax, [(str(h), hours.get(str(h))) for h in range(24)], f"{_fmt(figures.totals['Trips'])} trips")
    out.append(fig)

    fig, (a1, a2) = page("Geofence events and command outcomes", 2)
    bars(a1, _ordered(figures.by[("Geofence Events", "event")]), "Geofence events by kind")
    rate = figures.totals["Command Success Rate"]
    bars(a2, _ordered(figures.by[("Commands", "status")]), f"Commands by outcome (success {_fmt(rate)})")
    out.append(fig)

    fig, (a1, a2) = page("Agenda and Teams link usage", 2)
    per_day(a1, ["Teams Links", "Calendar Refreshes"], "requests")
    bars(a2, _ordered(figures.by[("Car Requests", "action")]), "Car requests by action")
    out.append(fig)
    return out


def _empty(ax: Axes) -> None:
    ax.text(0.5, 0.5, "no data in the lake", ha="center", va="center", transform=ax.transAxes, color="grey")
    ax.set_xticks([])
    ax.set_yticks([])
