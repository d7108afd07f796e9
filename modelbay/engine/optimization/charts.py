"""A parent and its variants drawn for chat: size vs perplexity (with error bars) beside tokens/s, as PNG and text."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from modelbay.engine.analytics import figures
from modelbay.engine.optimization.measure import Measurement

__all__ = ["ChartRow", "figure_text", "kl_text", "percent_text", "significant", "variants_png", "variants_text"]

_PARENT, _WITHIN, _OVER, _OTHER = "#C44E52", "#4C72B0", "#DD8452", "#8C8C8C"


@dataclass(frozen=True)
class ChartRow:
    """One model in the chart: its name and the figures drawn."""

    label: str
    size_bytes: int
    perplexity: float
    perplexity_se: float
    tokens_per_s: float | None
    parent: bool = False
    verdict: str | None = None  # compare.Verdict.label of a variant; None for the parent
    # A variant's (size, perplexity, tokens/s) ratios against its parent as measured in its own job (a stored
    # report's `versus`): what the text says, since another variant's job may have measured the parent apart.
    ratios: tuple[float | None, float | None, float | None] | None = None

    @classmethod
    def of(cls, label: str, m: Measurement | dict[str, Any], *, parent: bool = False,
           verdict: str | None = None, versus: dict[str, Any] | None = None) -> ChartRow:
        """The row of a measurement (or its `to_dict` dict, as a stored report holds it), with a variant's `versus`
        (`compare.Comparison.versus`) when known."""
        if isinstance(m, dict):
            m = Measurement.from_dict(m)
        ratios = (versus.get("size_ratio"), versus.get("ppl_ratio"), versus.get("speed_ratio")) if versus else None
        return cls(label, m.size_bytes, m.perplexity, m.perplexity_se, m.tokens_per_s, parent, verdict, ratios)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ChartRow:
        """Rebuild from `to_dict`'s dict."""
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})


# -- figures as people read them (the chart's text, and the chat cards: bot/commands/optimize.py) -------------------

def significant(value: float, digits: int, least: int = 0, *, strip: bool = True) -> str:
    """`value` to `digits` significant figures and at least `least` decimals, with thousands separators; `strip`
    drops trailing zeros past `least` decimals. Ratios: significant(0.0032, 3, 2) -> `0.0032` (never `0.00`),
    significant(0.3, 3, 2) -> `0.30`, significant(1.1, 4, 3) -> `1.100`; timing: significant(0.8, 2, strip=False)
    -> `0.80`, significant(1.46, 2) -> `1.5`."""
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    decimals = least if value == 0 else max(least, digits - 1 - math.floor(math.log10(abs(value))))
    text = f"{value:,.{decimals}f}"
    if strip and decimals > least:
        whole, _, part = text.partition(".")
        part = part.rstrip("0").ljust(least, "0")
        text = f"{whole}.{part}" if part else whole
    return "0" + text[2:] if text.startswith("-0") and not text.strip("-0.,") else text  # no "-0.00"


def figure_text(value: float, digits: int = 4) -> str:
    """A figure such as a perplexity: thousands separators from 1,000 (`12,010`), else `digits` significant
    figures (`10.00`, `9.877`), one format whatever the size (never `1.2e+04`)."""
    return f"{value:,.0f}" if abs(value) >= 1000 else significant(value, digits, strip=False)


def percent_text(fraction: float, decimals: int = 2, *, signed: bool = False) -> str:
    """A fraction as a percent with `decimals` decimals (`+1.23%`, `0.50%`); a non-zero one too small to show
    reads `<0.01%` (never `3e-06%`), and zero is never `-0.00%`."""
    value = float(fraction) * 100
    if 0 < abs(value) < 0.5 * 10 ** -decimals:
        return f"<{10 ** -decimals:.{decimals}f}%"
    if round(value, decimals) == 0:
        value = 0.0
    return f"{value:{'+' if signed else ''}.{decimals}f}%"


def kl_text(mean: float, se: float | None = None) -> str:
    """A mean KL divergence (3 significant figures, at least 4 decimals) ± its standard error (2); rounding noise
    below zero reads 0 (KL is never negative)."""
    text = significant(max(float(mean), 0.0), 3, 4)
    return f"{text} ± {significant(abs(float(se)), 2, 4)}" if se is not None and math.isfinite(se) else text


def _color(row: ChartRow) -> str:
    if row.parent:
        return _PARENT
    return {"within budget": _WITHIN, "over budget": _OVER}.get(row.verdict or "", _OTHER)


def variants_png(rows: list[ChartRow], title: str = "Variants against their parent") -> bytes:
    """Two panels, about 1000x420 pixels: the served weights' size (MB) vs perplexity with ±1 SE bars, each point
    labelled, the parent in red, variants in blue (within budget), orange (over) or grey (no budget); and tokens/s bars.

    Raises ValueError for no rows.
    """
    if not rows:
        raise ValueError("no models to draw")
    figure = figures.figure(10, 4.2)
    scatter, bars = figure.subplots(1, 2, gridspec_kw={"width_ratios": [3, 2]})
    for row in rows:
        size_mb = row.size_bytes / 1e6
        scatter.errorbar(size_mb, row.perplexity, yerr=row.perplexity_se, fmt="o", color=_color(row),
                         markersize=9 if row.parent else 7, capsize=3, zorder=3 if row.parent else 2)
        scatter.annotate(row.label + (" (parent)" if row.parent else ""), (size_mb, row.perplexity),
                         textcoords="offset points", xytext=(6, 6), fontsize=8)
    scatter.set_xlabel("size of the served weights (MB)")
    scatter.set_ylabel("perplexity (held-out, ± 1 SE)")
    scatter.set_title("size vs perplexity (lower left is better)")
    scatter.grid(True, alpha=0.3)
    scatter.margins(x=0.25, y=0.2)

    labels = [row.label for row in rows]
    speeds = [row.tokens_per_s or 0.0 for row in rows]
    drawn = bars.barh(range(len(rows)), speeds, color=[_color(row) for row in rows])
    for bar, row in zip(drawn, rows):
        text = "not measured" if row.tokens_per_s is None else f"{row.tokens_per_s:.1f}"
        bars.annotate(text, (bar.get_width(), bar.get_y() + bar.get_height() / 2), textcoords="offset points",
                      xytext=(3, 0), va="center", fontsize=8)
    bars.set_yticks(range(len(rows)), labels, fontsize=8)
    bars.invert_yaxis()  # the first row (the parent) on top
    bars.set_xlabel("decode tokens/s (higher is better)")
    bars.set_title("speed on this machine")
    bars.margins(x=0.2)
    figure.suptitle(title)
    return figures.png(figure)


def variants_text(rows: list[ChartRow]) -> str:
    """The chart's figures as aligned text lines, one per model, the parent first and marked: the text alternative.

    A variant's ratios are its own job's (`ChartRow.ratios`) when known, else against the parent row."""
    from modelbay.engine.units import human_bytes_apart

    ordered = sorted(rows, key=lambda row: not row.parent)
    parent = next((row for row in ordered if row.parent), None)
    sizes = human_bytes_apart(*(row.size_bytes for row in ordered)) if ordered else []
    pad = max((len(row.label) for row in ordered), default=0)
    lines = []
    for row, size in zip(ordered, sizes):
        speed = "—" if row.tokens_per_s is None else f"{row.tokens_per_s:.1f} tok/s"
        ppl = f"{figure_text(row.perplexity)} ± {figure_text(row.perplexity_se, 2)}"
        line = f"{row.label:<{pad}}  {size:>10}  ppl {ppl}  {speed}"
        ratios = row.ratios if row.ratios is not None and None not in row.ratios[:2] else None
        if ratios is None and parent is not None and not row.parent:
            ratios = (row.size_bytes / parent.size_bytes, row.perplexity / parent.perplexity,
                      row.tokens_per_s / parent.tokens_per_s if row.tokens_per_s and parent.tokens_per_s else None)
        if ratios is not None:
            size_ratio, ppl_ratio, speed_ratio = ratios
            line += f"  ({significant(size_ratio, 3, 2)}x size, {significant(ppl_ratio, 4, 3)}x ppl"
            line += f", {significant(speed_ratio, 2, 2)}x speed)" if speed_ratio is not None else ")"
        if row.parent:
            line += "  (parent)"
        elif row.verdict:
            line += f"  · {row.verdict}"
        lines.append(line)
    return "\n".join(lines)
