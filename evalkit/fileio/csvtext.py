"""CSV text that a spreadsheet opens as data, never as formulas.

Model names, step labels, series labels and paths come from users; a cell such as
`=HYPERLINK(...)` or `@SUM(...)` would run as a formula when a board or curve CSV is opened in
a spreadsheet (CSV injection). Cells that start with = + - @, a tab or a carriage return are
prefixed with a single quote, as OWASP recommends; cells that parse as numbers (-0.5, +inf) are
numbers, not formulas, and stay as they are so the file still loads as numbers.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def neutral(cell: str) -> str:
    """`cell` as a spreadsheet shows it verbatim."""
    if not cell.startswith(FORMULA_STARTS):
        return cell
    try:
        float(cell)
    except ValueError:
        return "'" + cell
    return cell


def csv_text(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """Header and rows (already rendered as text) as CSV with \\n line ends, every cell neutralised."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([neutral(c) for c in header])
    for row in rows:
        writer.writerow([neutral(c) for c in row])
    return buffer.getvalue()
