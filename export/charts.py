"""A dependency-free SVG line chart for benchmark results (no matplotlib on the target
machines): categorical x ticks, one colour per group, solid or dashed lines, optional
point markers, a legend of group labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


@dataclass(frozen=True)
class Line:
    """One polyline: (x, y) points, x among the chart's ticks; lines of one ``group``
    share a colour and one legend entry (``label``)."""

    group: int
    label: str
    points: Sequence[tuple[float, float]]
    dashed: bool = False
    markers: bool = False


def write_line_chart(path: Path, lines: Sequence[Line], x_ticks: Sequence[float],
                     x_label: str, y_label: str, y_max: float, legend_width: int = 140,
                     width: int = 640, height: int = 400, pad: int = 60) -> None:
    """Write the chart to ``path`` (folders created); y runs from 0 to ``y_max``."""
    xs = list(x_ticks)

    def px(x: float) -> float:
        return pad + (width - 2 * pad) * (xs.index(x) / max(len(xs) - 1, 1))

    def py(v: float) -> float:
        return height - pad - (height - 2 * pad) * v / y_max
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             'font-family="sans-serif" font-size="12">',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" '
             'stroke="black"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="black"/>',
             f'<text x="{width / 2}" y="{height - 15}" text-anchor="middle">{x_label}</text>',
             f'<text x="15" y="{height / 2}" transform="rotate(-90 15 {height / 2})" '
             f'text-anchor="middle">{y_label}</text>']
    for x in xs:
        parts.append(f'<text x="{px(x)}" y="{height - pad + 18}" text-anchor="middle">{x}</text>')
    for k in range(5):
        v = y_max * k / 4
        parts.append(f'<text x="{pad - 6}" y="{py(v) + 4}" text-anchor="end">{v:.1f}</text>')
    legend: dict[int, str] = {}
    for line in lines:
        colour = COLOURS[line.group % len(COLOURS)]
        points = sorted(line.points)
        coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in points)
        dash = ' stroke-dasharray="6 4"' if line.dashed else ""
        parts.append(f'<polyline points="{coords}" fill="none" stroke="{colour}" '
                     f'stroke-width="2"{dash}/>')
        if line.markers:
            parts += [f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{colour}"/>'
                      for x, y in points]
        legend.setdefault(line.group, line.label)
    for i, (group, label) in enumerate(legend.items()):
        parts.append(f'<text x="{width - pad - legend_width}" y="{pad + 16 * i}" '
                     f'fill="{COLOURS[group % len(COLOURS)]}">{label}</text>')
    parts.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(parts) + "\n")
