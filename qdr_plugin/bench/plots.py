"""PNG figures of a benchmark (matplotlib's Agg canvas, no display): PSNR against speed, the per-image PSNR change
of the INT8 models against the reference, and the per-layer sensitivity bars."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from qdr_plugin.utils.atomic_write import atomic_output

_MARKERS = {'fp32': 'o', 'int8': 's'}


def _title(row: dict[str, Any]) -> str:
    return f'{row["dataset"]}, {row["setting"]}'


def _groups(rows: Sequence[dict[str, Any]]) -> dict[tuple, list[dict[str, Any]]]:
    """Rows by (dataset, sigma, scale), in first-seen order."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row['dataset'], row['sigma'], row['scale']), []).append(row)
    return groups


def _figure(panels: int, width: float = 5.0, height: float = 4.0) -> tuple[Figure, list]:
    cols = min(panels, 3)
    nrows = math.ceil(panels / cols)
    fig = Figure(figsize=(width * cols, height * nrows), layout='constrained')
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, cols, squeeze=False).ravel().tolist()
    for ax in axes[panels:]:
        ax.set_visible(False)
    return fig, axes[:panels]


def _save(fig: Figure, path: str | Path) -> None:
    """Write ``fig`` to ``path`` atomically, in the format its suffix names (PNG by default)."""
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format=Path(path).suffix.lstrip('.').lower() or 'png')


def plot_psnr_vs_fps(rows: Sequence[dict[str, Any]], path: str | Path) -> Path | None:
    """One panel per dataset / setting, one point per model with a PSNR (circle FP32, square INT8); ``None``
    (nothing written) when no such row has a speed."""
    groups = {k: [r for r in g if r['fps'] is not None and r['psnr'] is not None] for k, g in _groups(rows).items()}
    groups = {k: g for k, g in groups.items() if g}
    if not groups:
        return None
    fig, axes = _figure(len(groups))
    for ax, group in zip(axes, groups.values()):
        for row in group:
            ax.scatter(row['fps'], row['psnr'], marker=_MARKERS.get(row['precision'], 'o'), s=50)
            ax.annotate(row['model'], (row['fps'], row['psnr']), textcoords='offset points', xytext=(5, 4),
                        fontsize=8)
        ax.set_title(_title(group[0]))
        ax.set_xlabel('frames / s')
        ax.set_ylabel(f'PSNR against the {group[0]["psnr_against"]} (dB)')
        ax.ticklabel_format(axis='y', useOffset=False)
        ax.grid(alpha=0.3)
    _save(fig, path)
    return Path(path)


def plot_per_image_diff(rows: Sequence[dict[str, Any]], reference: str, path: str | Path) -> Path | None:
    """Per image, the PSNR of every INT8 model minus that of ``reference``, one panel per dataset / setting; on a
    set without ground truth (the reference's row has no per-image PSNR) the INT8 model's PSNR against the
    reference's output itself. ``None`` (nothing written) when no INT8 model has a reference row to compare with."""
    panels = []
    for group in _groups(rows).values():
        ref = next((r for r in group if r['model'] == reference), None)
        int8 = [r for r in group if r['precision'] == 'int8' and r['model'] != reference]
        if ref is not None and int8:
            panels.append((ref, int8))
    if not panels:
        return None
    fig, axes = _figure(len(panels))
    for ax, (ref, int8) in zip(axes, panels):
        fidelity = ref['psnr_per_image'] is None
        for row in int8:
            diff = (row['psnr_per_image'] if fidelity
                    else [a - b for a, b in zip(row['psnr_per_image'], ref['psnr_per_image'])])
            ax.plot(range(1, len(diff) + 1), diff, marker=_MARKERS['int8'], markersize=3, linewidth=0.8,
                    label=f'{row["model"]} (mean {sum(diff) / len(diff):{".2f" if fidelity else "+.3f"}} dB)')
        if fidelity:
            ax.set_title(f'{_title(ref)}: INT8 against {reference}\'s output')
            ax.set_ylabel(f'PSNR against {reference} (dB)')
        else:
            ax.axhline(0.0, color='black', linewidth=0.8)
            ax.set_title(f'{_title(ref)}: INT8 - {reference}')
            ax.set_ylabel('PSNR difference (dB)')
        ax.set_xlabel('image (name-sorted)')
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    _save(fig, path)
    return Path(path)


def plot_sensitivity(layers: Sequence[dict[str, Any]], path: str | Path, title: str) -> Path:
    """Horizontal bars of the dB each layer loses when it alone is quantized, the largest loss at the top."""
    ordered = sorted(layers, key=lambda r: r['loss_db'])
    fig = Figure(figsize=(7.0, max(2.5, 0.25 * len(ordered) + 1.2)), layout='constrained')
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.barh([r['layer'] for r in ordered], [r['loss_db'] for r in ordered], color='tab:red')
    ax.axvline(0.0, color='black', linewidth=0.8)
    ax.set_xlabel('PSNR lost with only this layer quantized (dB)')
    ax.set_title(title, fontsize=9)
    ax.tick_params(axis='y', labelsize=7)
    ax.grid(axis='x', alpha=0.3)
    _save(fig, path)
    return Path(path)
