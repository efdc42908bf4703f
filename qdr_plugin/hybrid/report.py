"""The search's figure: every scored hybrid and the front, PSNR against the proxy cost of the transformer blocks
kept or against measured latency (matplotlib's Agg canvas, no display)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from qdr_plugin.utils.atomic_write import atomic_output

from .search import Candidate


def plot_front(rows: Sequence[Mapping[str, Any]], evaluated: Sequence[Candidate], path: str | Path,
               measured: bool = False) -> Path:
    """Grey dots: every scored candidate (proxy cost); line: the ``rows`` on the front (``on_front``); crosses: the
    other rows (the teacher, the best). With ``measured``, every row against its median latency (error bars:
    min-max) instead. Every row is labelled."""
    fig = Figure(figsize=(6, 4.5), layout='constrained')
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    if measured:
        xs = [r['latency_ms'] for r in rows]
        lows = [x - r['latency_min_ms'] for x, r in zip(xs, rows)]
        highs = [r['latency_max_ms'] - x for x, r in zip(xs, rows)]
        ax.errorbar(xs, [r['psnr'] for r in rows], xerr=[lows, highs], fmt='o', capsize=3)
        ax.set_xlabel('FP32 ONNX Runtime latency, median (ms)')
    else:
        ax.scatter([c.cost for c in evaluated], [c.psnr for c in evaluated], s=12, c='0.7', label='scored')
        front = sorted((r for r in rows if r['on_front']), key=lambda r: r['cost'])
        ax.plot([r['cost'] for r in front], [r['psnr'] for r in front], 'o-', label='front')
        others = [r for r in rows if not r['on_front']]
        if others:
            ax.scatter([r['cost'] for r in others], [r['psnr'] for r in others], marker='x', c='C3',
                       label='teacher / best, off the front')
        ax.set_xlabel('proxy cost of the transformer blocks kept')
        ax.legend()
    for row in rows:
        x = row['latency_ms'] if measured else row['cost']
        ax.annotate(row['label'], (x, row['psnr']), textcoords='offset points', xytext=(5, 4), fontsize=8)
    ax.set_ylabel('validation PSNR (dB)')
    ax.ticklabel_format(axis='y', useOffset=False)
    ax.grid(alpha=0.3)
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format='png')
    return Path(path)
