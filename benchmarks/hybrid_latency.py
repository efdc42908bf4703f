"""FP32 ONNX Runtime latency of Restormer transformer blocks against their SSM surrogates, and of the searched
hybrids against their teacher: interleaved rounds, median and range (min-max) per file.

    python benchmarks/hybrid_latency.py --blocks [--dims 48 96] [--sizes 256 512] [--rounds 20] [--threads 1]
    python benchmarks/hybrid_latency.py --search experiments/hybrid_gray_sigma25/search.json [--sizes 256 512]
    python benchmarks/hybrid_latency.py --options options/hybrid/hybrid_gray_sigma25.yml --replace none latent all

``--blocks``: one Restormer transformer block (``--heads``, FFN expansion 2.66, bias-free, WithBias norm) and one
:class:`~qdr_plugin.archs.ssm_arch.SSMBlock` (``--expand``, ``--scan-steps``) per channel count in ``--dims``, run on
``1 x dim x S x S`` feature maps for each S in ``--sizes``. ``--search``: every hybrid of a ``basicsr hybrid search``
table (its ``network_g`` and assembled checkpoint), the teacher among them, on ``1 x C x S x S`` images; the speed-up
is against the teacher's median. ``--options``: before any training, the options file's Restormer (``network_g``) and
the hybrids that replace each ``--replace`` set (comma-separated stage or block names; ``all``: every stage; ``none``:
the teacher) with surrogates of the file's ``hybrid.surrogate`` settings (or ``--expand`` / ``--scan-steps``),
untrained: latency does not depend on the weights. Each size is one interleaved comparison
(:func:`qdr_plugin.hybrid.interleaved_latency`: every round runs each file once, in an order rotated from round to
round). Prints a table and writes ``benchmarks/results/hybrid_latency_{blocks,networks,untrained}.{json,csv,md}``
(``--search``: also ``hybrid_latency_networks_<S>.png``, the search's PSNR against the median latency). Run
it on an idle machine: a busy one moves the numbers.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import yaml

from qdr_plugin.archs.restormer_arch import TransformerBlock
from qdr_plugin.archs.ssm_arch import SSMBlock
from qdr_plugin.bench.report import command_line, markdown_table, run_info, write_results
from qdr_plugin.deploy.onnx_export import export_onnx
from qdr_plugin.hybrid import interleaved_latency, spearman
from qdr_plugin.option_rules import OptionsError

RESULTS_DIR = Path(__file__).resolve().parent / 'results'
COLUMNS = [('model', 'model', ''), ('size', 'S', 'd'), ('median_ms', 'median (ms)', '.2f'), ('min_ms', 'min', '.2f'),
           ('max_ms', 'max', '.2f'), ('speedup', 'speed-up', '.2f'), ('kept', 'transformer blocks', ''),
           ('cost', 'feature-size proxy', '.2f'), ('psnr', 'val PSNR (dB)', '.3f')]


def _measure(nets: dict[str, tuple[torch.nn.Module, int]], sizes: list[int], args: argparse.Namespace
             ) -> list[dict]:
    """Export every ``name -> (net, input channels)`` to FP32 ONNX and time them per size, interleaved with the
    others of the same input channels; one row per network and size."""
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        groups: dict[int, dict[str, Path]] = {}
        for name, (net, channels) in nets.items():
            groups.setdefault(channels, {})[name] = export_onnx(net.eval(), Path(tmp) / f'{name}.onnx', channels,
                                                                fp32=True)
        for size in sizes:
            for channels, files in groups.items():
                measured = interleaved_latency(files, channels, size, args.rounds, threads=args.threads)
                rows += [{'model': name, 'size': size, **m} for name, m in measured.items()]
    return rows


def _speedups(rows: list[dict], reference: Callable[[str], str]) -> None:
    """``speedup``: the median of the row's ``reference(model)`` at the same size over the row's median."""
    medians = {(r['model'], r['size']): r['median_ms'] for r in rows}
    for row in rows:
        ref = medians.get((reference(row['model']), row['size']))
        row['speedup'] = None if ref is None else ref / row['median_ms']


def _blocks(args: argparse.Namespace) -> tuple[str, list[dict], str]:
    nets = {}
    for dim in args.dims:
        nets[f'transformer_c{dim}'] = (TransformerBlock(dim, args.heads, 2.66, False, 'WithBias'), dim)
        nets[f'ssm_c{dim}'] = (SSMBlock(dim, 1.0 if args.expand is None else args.expand,
                                        8 if args.scan_steps is None else args.scan_steps), dim)
    rows = _measure(nets, args.sizes, args)
    _speedups(rows, lambda model: f"transformer_c{model.split('_c')[1]}")
    return 'hybrid_latency_blocks', rows, ''


def _networks(args: argparse.Namespace) -> tuple[str, list[dict], str]:
    from basicsr.archs import build_network  # after qdr_plugin's torchvision alias

    from qdr_plugin.hybrid.report import plot_front

    search = json.loads(Path(args.search).read_text())
    nets, info = {}, {}
    for row in search['rows']:
        net = build_network(dict(row['network_g']))
        net.load_state_dict(torch.load(row['checkpoint'], map_location='cpu', weights_only=True)['params'])
        channels = row['network_g'].get('inp_channels', 3)
        nets[row['label']] = (net, channels)
        info[row['label']] = row
    teacher = next(r['label'] for r in search['rows'] if not r['surrogates_list'])
    rows = _measure(nets, args.sizes, args)
    _speedups(rows, lambda model: teacher)
    for row in rows:
        row['kept'], row['cost'], row['psnr'] = (info[row['model']][k] for k in ('kept', 'cost', 'psnr'))
    lines = []
    for size in args.sizes:
        at = [r for r in rows if r['size'] == size]
        medians = [r['median_ms'] for r in at]
        lines.append(f'Spearman rank correlation with the median latency at {size}: transformer blocks kept '
                     f"{spearman([r['kept'] for r in at], medians):.3f}, {search['proxy']} proxy "
                     f"{spearman([r['cost'] for r in at], medians):.3f}")
        plotted = [{**info[r['model']], 'latency_ms': r['median_ms'], 'latency_min_ms': r['min_ms'],
                    'latency_max_ms': r['max_ms']} for r in at]
        figure = plot_front(plotted, [], Path(args.out) / f'hybrid_latency_networks_{size}.png', measured=True)
        lines.append(f'figure: {figure.name}')
    return 'hybrid_latency_networks', rows, '\n'.join(lines)


def _untrained(args: argparse.Namespace) -> tuple[str, list[dict], str]:
    from qdr_plugin.archs.restormer_arch import STAGES
    from qdr_plugin.archs.ssm_hybrid_arch import RestormerHybrid
    from qdr_plugin.hybrid.cli import block_weights
    from qdr_plugin.hybrid.options import hybrid_options

    opt = yaml.safe_load(Path(args.options).read_text())  # the network and surrogate settings only: no weights read
    network = {k: v for k, v in opt['network_g'].items() if k != 'type'}
    surrogate = dict(hybrid_options(opt)['surrogate'])
    surrogate['ssm_expand'] = surrogate['ssm_expand'] if args.expand is None else args.expand
    surrogate['scan_steps'] = surrogate['scan_steps'] if args.scan_steps is None else args.scan_steps
    weights = block_weights(RestormerHybrid(**network), 'feature_size')
    nets, proxy = {}, {}
    for entry in args.replace:
        chosen = [] if entry == 'none' else list(STAGES) if entry == 'all' else entry.split(',')
        net = RestormerHybrid(**network, surrogates=chosen, **surrogate)
        nets[entry] = (net, network.get('inp_channels', 3))
        kept = [name for name in weights if name not in net.surrogates]
        proxy[entry] = {'kept': len(kept), 'cost': sum(weights[name] for name in kept)}
    rows = _measure(nets, args.sizes, args)
    _speedups(rows, lambda model: 'none')
    lines = [f"surrogates: ssm_expand {surrogate['ssm_expand']}, scan_steps {surrogate['scan_steps']}; untrained "
             'networks (latency only)']
    for row in rows:
        row.update(proxy[row['model']])
    for size in args.sizes:
        at = [r for r in rows if r['size'] == size]
        medians = [r['median_ms'] for r in at]
        lines.append(f'Spearman rank correlation with the median latency at {size}: transformer blocks kept '
                     f"{spearman([r['kept'] for r in at], medians):.3f}, feature-size proxy "
                     f"{spearman([r['cost'] for r in at], medians):.3f}")
    return 'hybrid_latency_untrained', rows, '\n'.join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument('--blocks', action='store_true', help='transformer block against SSM surrogate block')
    what.add_argument('--search', help='the search.json of basicsr hybrid search: its hybrids and teacher')
    what.add_argument('--options', help="a hybrid options file: its Restormer and the --replace hybrids, untrained")
    parser.add_argument('--replace', nargs='+', default=['none', 'all'],
                        help='(--options) comma-separated stages or blocks per hybrid; all: every stage; none: teacher')
    parser.add_argument('--dims', type=int, nargs='+', default=[48], help='block channels (--blocks)')
    parser.add_argument('--heads', type=int, default=1, help='attention heads of the transformer block (--blocks)')
    parser.add_argument('--expand', type=float, help='SSM scan channels per channel (--blocks: 1.0; --options: the '
                        "file's)")
    parser.add_argument('--scan-steps', type=int, help="SSM doubling steps (--blocks: 8; --options: the file's)")
    parser.add_argument('--sizes', type=int, nargs='+', default=[256, 512])
    parser.add_argument('--rounds', type=int, default=20)
    parser.add_argument('--threads', type=int, default=1, help='ONNX Runtime intra-op threads')
    parser.add_argument('--out', default=str(RESULTS_DIR))
    args = parser.parse_args()
    try:
        stem, rows, extra = _blocks(args) if args.blocks else _networks(args) if args.search else _untrained(args)
    except OptionsError as error:  # a --replace name or a surrogate setting the arch refuses
        parser.error(str(error))
    table = markdown_table(rows, COLUMNS)
    info = run_info(command_line(), args.threads, sizes=args.sizes, rounds=args.rounds)
    paths = write_results(args.out, stem, rows, info, table, extra)
    print(table)
    if extra:
        print(extra)
    print(f"results: {paths['json']}")


if __name__ == '__main__':
    main()
