"""docs/scale.md: the cost tables add up, and the per-car table is the monthly table divided by the fleet."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "scale.md"


def _table(heading: str) -> tuple[list[str], dict[str, list[float]]]:
    """The first table after `heading`: its column names and each row's numbers by line name."""
    text = DOC.read_text(encoding="utf-8")
    after = text[text.index(heading) :].splitlines()
    start = next(i for i, line in enumerate(after) if line.startswith("|"))
    block: list[str] = []
    for line in after[start:]:
        if not line.startswith("|"):
            break
        block.append(line)
    header = [cell.strip() for cell in block[0].strip("|").split("|")][1:]
    rows: dict[str, list[float]] = {}
    for line in block[2:]:
        cells = [cell.strip().strip("*") for cell in line.strip("|").split("|")]
        rows[cells[0]] = [float(cell.replace(",", "")) for cell in cells[1:]]
    return header, rows


def _cars(column: str) -> int:
    match = re.fullmatch(r"([\d,]+) (k|M) / .+", column)
    assert match, column
    return int(match.group(1).replace(",", "")) * (1_000 if match.group(2) == "k" else 1_000_000)


def test_monthly_cost_columns_add_up() -> None:
    header, rows = _table("### Monthly cost")
    total = rows.pop("total")
    assert len(rows) >= 6
    assert len(header) == 6
    for index, column in enumerate(header):
        lines = sum(values[index] for values in rows.values())
        assert abs(lines - total[index]) <= len(rows), (column, lines, total[index])  # each line rounded to $1


def test_per_car_columns_add_up_and_match_the_monthly_table() -> None:
    header, per_car = _table("### Per car per month")
    _, monthly = _table("### Monthly cost")
    total = per_car.pop("total")
    for index, column in enumerate(header):
        lines = sum(values[index] for values in per_car.values())
        assert abs(lines - total[index]) < 0.00051, (column, lines, total[index])
        cars = _cars(column)
        for line, values in per_car.items():
            assert abs(values[index] - monthly[line][index] / cars) < 0.00006, (column, line)
        assert abs(total[index] - monthly["total"][index] / cars) < 0.0005, column
