"""``basicsr hybrid``: distil state-space surrogates of a trained Restormer, then search the hybrid.

    basicsr hybrid distill -opt options/hybrid/hybrid_gray_sigma25.yml
    basicsr hybrid search  -opt options/hybrid/hybrid_gray_sigma25.yml [--surrogates S.pth] [--latency]

The options file is the teacher's options (``network_g: {type: Restormer, ...}``, ``path.pretrain_network_g`` its
trained weights, ``datasets.train`` the images whose features the surrogates learn on, a ``val`` dataset the search
scores on, ``val.metrics``; with ``train:`` / ``quant:`` / ``logger:``, a QDR training file whose schedule the
hybrids are fine-tuned with) plus a ``hybrid:`` block (:mod:`qdr_plugin.hybrid.options`); the whole file is checked
before any work (as training options when it has ``train:``), one line per mistake. Outputs go to
``experiments/<name>/``:

* ``distill``: ``surrogates.pth`` (``{'params': ...}``, keys ``<block>.<key>``, one surrogate per transformer block)
  and ``distill_log.json`` (every ``print_freq`` iterations, each block's loss term);
* ``search``: ``search.json`` / ``.csv`` / ``.md`` (every candidate scored, the Pareto front, the best at
  ``lambda``), ``search.png`` (PSNR against transformer blocks kept, or against measured latency with
  ``--latency``), and for each front point, the best and the teacher ``hybrid_<k>.pth``, the assembled hybrid's
  weights, with its ``network_g`` (``type: RestormerHybrid``) in the JSON, and, when the options file is a
  training file (it has ``train:``), ``hybrid_<k>.yml``: that file with the hybrid's ``name``, ``network_g`` and
  checkpoint, with which ``basicsr train`` fine-tunes it and QDR quantizes it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from basicsr.data import build_dataset
from torch import nn
from torch.utils.data import DataLoader

from qdr_plugin.archs.restormer_arch import STAGES, Restormer
from qdr_plugin.archs.ssm_arch import SSMBlock
from qdr_plugin.archs.ssm_hybrid_arch import RestormerHybrid, expand_surrogates
from qdr_plugin.bench.report import command_line, markdown_table, run_info, write_results
from qdr_plugin.deploy.onnx_export import export_onnx
from qdr_plugin.deploy.options import input_channels
from qdr_plugin.errors import UserError
from qdr_plugin.option_rules import MISSING, OptionsError
from qdr_plugin.options_check import check_options_file
from qdr_plugin.utils.atomic import atomic_torch_save
from qdr_plugin.utils.atomic_write import atomic_write_text
from qdr_plugin.utils.checkpoint import load_networks, read_checkpoint, state_dict_of

from .assemble import hybrid_state_dict, swapped
from .distill import SurrogateDistiller, block_io
from .latency import interleaved_latency, spearman
from .options import hybrid_options
from .report import plot_front
from .scoring import mean_psnr
from .search import Candidate, SearchResult, beam_search, exhaustive_search, pareto_front

SEARCH_COLUMNS = [('label', 'hybrid', ''), ('surrogates', 'replaced', ''), ('kept', 'transformer blocks', 'd'),
                  ('cost', 'proxy cost', '.2f'), ('psnr', 'val PSNR (dB)', '.3f'), ('objective', 'J', '.3f'),
                  ('on_front', 'on the front', ''), ('best', 'best J', ''), ('finetune', 'fine-tune options', ''),
                  ('latency_ms', 'ms (median)', '.2f'), ('latency_min_ms', 'min', '.2f'),
                  ('latency_max_ms', 'max', '.2f')]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='basicsr hybrid', description='Distil state-space surrogates of a trained '
                                     'Restormer, then search the hybrid (docs/hybrid.md).')
    sub = parser.add_subparsers(dest='step', required=True)
    distill = sub.add_parser('distill', help='train one SSM surrogate per transformer block of the teacher')
    search = sub.add_parser('search', help='search the hybrid (transformer / surrogate per block or stage)')
    for p in (distill, search):
        p.add_argument('-opt', required=True, help="the options YAML (the teacher's options + a hybrid: block)")
    search.add_argument('--surrogates', help='surrogate weights (default experiments/<name>/surrogates.pth)')
    search.add_argument('--latency', action='store_true',
                        help='also measure the front in ONNX Runtime (FP32, interleaved) and rank-check the proxy')
    return parser


# ----------------------------------------------------------------------------------------------------- options
def read_hybrid_options(path: str, step: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The options file checked as basicsr's test options, then the rules of the hybrid commands: a Restormer
    teacher with trained weights, the dataset the step needs, the ``hybrid:`` block."""
    opt = check_options_file(path, is_train=False)
    if 'train' in opt:
        check_options_file(path, is_train=True)  # the fine-tune schedule, before hours of distillation
    network = opt['network_g']
    if network['type'] != 'Restormer':
        raise OptionsError('network_g.type', 'the teacher of the hybrid commands must be a Restormer', network['type'],
                           'Write network_g: {type: Restormer, ...} (the trained teacher).')
    if not (opt.get('path') or {}).get('pretrain_network_g'):
        raise OptionsError('path.pretrain_network_g', 'the teacher needs its trained weights', MISSING,
                           'Give the Restormer checkpoint (models/net_g_fp32.pth of its QDR run, or any FP32 or QDR '
                           'checkpoint of it: a QDR one gives its FP32 teacher).')
    datasets = opt['datasets']
    if step == 'distill' and 'train' not in datasets:
        raise OptionsError('datasets.train', 'distillation needs the images whose features the surrogates learn on',
                           MISSING, 'Add datasets: train: {...} (the teacher\'s training set).')
    if step == 'search' and _val_key(datasets) is None:
        raise OptionsError('datasets.val', 'the search scores hybrids on a validation set', MISSING,
                           'Add datasets: val: {...}.')
    hybrid = hybrid_options(opt)
    RestormerHybrid.check_surrogate_options(hybrid['surrogate'], 'hybrid.surrogate')
    return opt, hybrid


def _val_key(datasets: Mapping[str, Any]) -> str | None:
    return next((k for k in datasets if str(k).split('_')[0] == 'val'), None)


def _dataset(opt: dict[str, Any], key: str):
    dataset_opt = dict(opt['datasets'][key])
    dataset_opt['phase'] = key.split('_')[0]
    return build_dataset(dataset_opt)


def _train_batches(opt: dict[str, Any]) -> Iterator[torch.Tensor]:
    """Endless reshuffled batches of the train dataset's network inputs (``lq``)."""
    dataset_opt = opt['datasets']['train']
    loader = DataLoader(_dataset(opt, 'train'), batch_size=dataset_opt.get('batch_size_per_gpu', 8), shuffle=True,
                        num_workers=dataset_opt.get('num_worker_per_gpu', 0), drop_last=True)
    while True:
        for batch in loader:
            yield batch['lq']


def _val_pairs(opt: dict[str, Any], count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    dataset = _dataset(opt, _val_key(opt['datasets']))
    return [(dataset[i]['lq'], dataset[i]['gt']) for i in range(min(count, len(dataset)))]


def _teacher(opt: dict[str, Any]) -> Restormer:
    """The FP32 Restormer of ``path.pretrain_network_g``: the network of an FP32 checkpoint, the FP32 teacher
    (``params_teacher``) of a QDR one."""
    network, fp32_teacher = load_networks(opt['network_g'], None, opt['path']['pretrain_network_g'],
                                          'path.pretrain_network_g')
    return (network if fp32_teacher is None else fp32_teacher).eval().requires_grad_(False)


def make_surrogates(teacher: Restormer, surrogate_opt: Mapping[str, Any]) -> dict[str, SSMBlock]:
    """One fresh :class:`SSMBlock` per transformer block of ``teacher``, with the block's channels and norm."""
    out = {}
    for name in teacher.block_names():
        block = teacher.get_submodule(name)
        norm_type = 'BiasFree' if not hasattr(block.norm1.body, 'bias') else 'WithBias'
        out[name] = SSMBlock(block.attn.qkv.in_channels, surrogate_opt['ssm_expand'], surrogate_opt['scan_steps'],
                             block.attn.qkv.bias is not None, norm_type)
    return out


def _experiment_dir(opt: dict[str, Any]) -> Path:
    folder = Path('experiments') / opt['name']
    folder.mkdir(parents=True, exist_ok=True)
    return folder


# ----------------------------------------------------------------------------------------------------- distill
def run_distill(opt: dict[str, Any], hybrid: Mapping[str, Mapping[str, Any]]) -> Path:
    """Distil every surrogate in one run; writes ``surrogates.pth`` and ``distill_log.json``; returns the former."""
    torch.manual_seed(opt.get('manual_seed') or 0)
    teacher = _teacher(opt)
    settings = hybrid['distill']
    distiller = SurrogateDistiller(teacher, make_surrogates(teacher, hybrid['surrogate']), settings['lr'],
                                   settings['distance'], settings['normalize'])
    folder, log = _experiment_dir(opt), []
    batches = _train_batches(opt)
    for it in range(1, settings['total_iter'] + 1):
        terms = distiller.step(next(batches))
        if it % settings['print_freq'] == 0 or it == settings['total_iter']:
            log.append({'iter': it, **terms})
            worst = max((k for k in terms if k != 'total'), key=terms.__getitem__)
            print(f'iter {it}: loss {terms["total"]:.4f} (worst block {worst}: {terms[worst]:.4f})', flush=True)
    path = folder / 'surrogates.pth'
    atomic_torch_save({'params': distiller.state_dict(), 'surrogate': dict(hybrid['surrogate'])}, path)
    atomic_write_text(folder / 'distill_log.json', json.dumps(log, indent=2) + '\n')
    print(f'surrogates: {path}')
    return path


# ------------------------------------------------------------------------------------------------------ search
def block_weights(teacher: Restormer, proxy: str) -> dict[str, float]:
    """Each transformer block's proxy weight ``w_b``: 1 (``blocks``), or its input's elements (channels x pixels,
    from one forward pass on a 64 x 64 input) over their mean across the blocks (``feature_size``)."""
    names = teacher.block_names()
    if proxy == 'blocks':
        return dict.fromkeys(names, 1.0)
    with block_io(teacher, names) as captured, torch.no_grad():
        teacher(torch.zeros(1, teacher.patch_embed.proj.in_channels, 64, 64))
    sizes = {name: captured[name][0].numel() for name in names}
    mean = sum(sizes.values()) / len(sizes)
    return {name: size / mean for name, size in sizes.items()}


def _units(teacher: Restormer, granularity: str, proxy: str) -> tuple[list[str], list[int], list[float]]:
    """The swappable units, their transformer blocks and their proxy costs."""
    weights = block_weights(teacher, proxy)
    if granularity == 'block':
        names = teacher.block_names()
        return names, [1] * len(names), [weights[n] for n in names]
    stages = [s for s in STAGES if len(getattr(teacher, s))]
    costs = [sum(weights[f'{s}.{i}'] for i in range(len(getattr(teacher, s)))) for s in stages]
    return stages, [len(getattr(teacher, s)) for s in stages], costs


def _surrogate_modules(teacher: Restormer, checkpoint: Mapping[str, Any], surrogate_opt: Mapping[str, Any],
                       path: str) -> dict[str, SSMBlock]:
    """The distilled surrogates of every block of ``teacher``; a file made for another teacher is refused."""
    state = state_dict_of(checkpoint)
    modules = make_surrogates(teacher, surrogate_opt)
    for name, module in modules.items():
        prefix = f'{name}.'
        try:
            module.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
        except RuntimeError as error:
            detail = ' '.join(str(error).split())[:160]
            raise UserError(f'--surrogates {path} does not fit this teacher at block {name} ({detail}): run basicsr '
                            'hybrid distill with these options first.') from error
        module.eval()
    return modules


def hybrid_network_opt(network_opt: Mapping[str, Any], units: tuple[str, ...], surrogate_opt: Mapping[str, Any]
                       ) -> dict[str, Any]:
    """The ``network_g`` of the hybrid replacing ``units`` (``type: RestormerHybrid``)."""
    return {**network_opt, 'type': 'RestormerHybrid', 'surrogates': list(units), **surrogate_opt}


def run_search(opt: dict[str, Any], hybrid: Mapping[str, Mapping[str, Any]], surrogates_path: str | None,
               latency: bool) -> Path:
    """The search; writes the files of the module docstring; returns the JSON's path."""
    teacher = _teacher(opt)
    folder = _experiment_dir(opt)
    surrogates_path = surrogates_path or str(folder / 'surrogates.pth')
    checkpoint = read_checkpoint(surrogates_path, '--surrogates')
    surrogate_opt = checkpoint.get('surrogate', hybrid['surrogate'])
    modules = _surrogate_modules(teacher, checkpoint, surrogate_opt, surrogates_path)
    settings = hybrid['search']
    pairs = _val_pairs(opt, settings['val_images'])
    names = teacher.block_names()

    def evaluate(units: tuple[str, ...]) -> float:
        with swapped(teacher, {b: modules[b] for b in expand_surrogates(units, names)}):
            psnr = mean_psnr(teacher, pairs)
        print(f'  {len(units)} replaced {list(units)}: {psnr:.3f} dB', flush=True)
        return psnr

    units, blocks, costs = _units(teacher, settings['granularity'], settings['proxy'])
    if settings['strategy'] == 'exhaustive':
        try:
            result = exhaustive_search(units, blocks, evaluate, settings['lambda'], costs)
        except ValueError as error:
            raise OptionsError('hybrid.search.strategy', str(error), 'exhaustive',
                               'Set search.granularity: stage, or strategy: beam.') from error
    else:
        result = beam_search(units, blocks, evaluate, settings['lambda'], settings['beam'], settings['max_evals'],
                             costs)
    rows = _front_rows(opt, teacher, result, surrogate_opt, checkpoint, folder)
    chosen = finetune_choice(result, settings['finetune'], settings['finetune_at'])
    for row in rows:
        row['finetune'] = tuple(row['surrogates_list']) in chosen
    info = run_info(command_line(), threads=torch.get_num_threads(), lam=settings['lambda'], proxy=settings['proxy'],
                    granularity=settings['granularity'], strategy=settings['strategy'], beam=settings['beam'],
                    evaluated=len(result.evaluated),
                    units=units, unit_costs=costs, best=result.best.units,
                    candidates=[{'surrogates': list(c.units), 'psnr': c.psnr, 'kept': c.kept, 'cost': c.cost}
                                for c in result.evaluated])
    extra = ''
    if latency:
        extra = _measure_front(opt, hybrid['latency'], rows, folder)
        info['spearman_kept_vs_latency'] = rows[0]['spearman_kept']
        info['spearman_proxy_vs_latency'] = rows[0]['spearman_proxy']
        info['latency_front'] = _latency_front(rows)
    if 'train' in opt:
        for row in rows:
            if row['finetune']:
                row['finetune_options'] = str(_write_finetune_options(opt, row, folder))
    paths = write_results(folder, 'search', rows, info, markdown_table(rows, SEARCH_COLUMNS), extra)
    plot_front(rows, result.evaluated, folder / 'search.png', measured=latency)
    best = next(r for r in rows if r['best'])
    print(markdown_table(rows, SEARCH_COLUMNS))
    print(f"best at lambda {settings['lambda']}: {best['label']} -> {best['checkpoint']}; network_g: "
          f"{json.dumps(best['network_g'])}")
    return paths['json']


def finetune_choice(result: SearchResult, count: int, at: Sequence[float] | None = None) -> set[tuple[str, ...]]:
    """The replaced units of the hybrids to fine-tune: the best at lambda and the front points (fewer when the
    front is shorter) nearest the proxy costs ``at``, by default ``T i / count``, ``i = 0 .. count - 1`` (``T`` the
    teacher's cost: the cheapest front point always, the others spread over the cost range); never the teacher."""
    front = [c for c in result.front if c.units]
    teacher_cost = max(c.cost for c in result.evaluated)
    targets = list(at) if at is not None else [teacher_cost * i / count for i in range(count)]
    chosen: list[Candidate] = []
    for target in targets:
        left = [c for c in front if c not in chosen]
        if not left:
            break
        chosen.append(min(left, key=lambda c: abs(c.cost - target)))
    return {c.units for c in chosen} | ({result.best.units} if result.best.units else set())


def _latency_front(rows: list[dict[str, Any]]) -> list[str]:
    """Labels of the rows on the Pareto front of PSNR against measured latency, fastest first."""
    by_units = {tuple(r['surrogates_list']): r for r in rows}
    front = pareto_front([Candidate(u, r['psnr'], r['kept'], r['cost']) for u, r in by_units.items()],
                         cost=lambda c: by_units[c.units]['latency_ms'])
    return [by_units[c.units]['label'] for c in front]


def _front_rows(opt: dict[str, Any], teacher: Restormer, result: SearchResult, surrogate_opt: Mapping[str, Any],
                checkpoint: Mapping[str, Any], folder: Path) -> list[dict[str, Any]]:
    """One row per front point, the best and the teacher (each once), its assembled checkpoint written."""
    points = list(result.front)
    for extra in (result.best, next(c for c in result.evaluated if not c.units)):
        if extra not in points:
            points.append(extra)
    teacher_state = teacher.state_dict()
    surrogate_state = state_dict_of(checkpoint)
    rows = []
    for k, cand in enumerate(points):
        blocks = expand_surrogates(cand.units, teacher.block_names())
        path = folder / f'hybrid_{k}.pth'
        atomic_torch_save({'params': hybrid_state_dict(teacher_state, surrogate_state, blocks)}, path)
        rows.append({'label': f'hybrid_{k}', 'surrogates': ' '.join(cand.units) or '-',
                     'surrogates_list': list(cand.units), 'kept': cand.kept, 'cost': cand.cost, 'psnr': cand.psnr,
                     'objective': cand.objective(result.lam), 'best': cand == result.best,
                     'on_front': cand in result.front, 'checkpoint': str(path),
                     'network_g': hybrid_network_opt(opt['network_g'], cand.units, surrogate_opt),
                     'latency_ms': None, 'latency_min_ms': None, 'latency_max_ms': None})
    return rows


def _write_finetune_options(opt: Mapping[str, Any], row: Mapping[str, Any], folder: Path) -> Path:
    """``<folder>/<label>.yml``: the options without ``hybrid:``, with the hybrid's ``name``, ``network_g`` and
    assembled checkpoint as ``path.pretrain_network_g``; checked as ``basicsr train`` will check it."""
    options = json.loads(json.dumps({k: v for k, v in opt.items() if k != 'hybrid'}))  # plain dicts and lists
    options['name'] = f"{opt['name']}_{row['label']}"
    options['network_g'] = dict(row['network_g'])
    options['path']['pretrain_network_g'] = row['checkpoint']
    path = folder / f"{row['label']}.yml"
    atomic_write_text(path, yaml.safe_dump(options, sort_keys=False))
    check_options_file(str(path), is_train=True)
    return path


def _measure_front(opt: dict[str, Any], settings: Mapping[str, Any], rows: list[dict[str, Any]], folder: Path) -> str:
    """FP32 ONNX Runtime latency of every row's hybrid (interleaved), written into the rows; returns the Spearman
    line."""
    from basicsr.archs import build_network

    channels = input_channels(opt)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        files = {}
        for row in rows:
            net: nn.Module = build_network(dict(row['network_g']))
            net.load_state_dict(torch.load(row['checkpoint'], map_location='cpu', weights_only=True)['params'])
            files[row['label']] = export_onnx(net.eval(), Path(tmp) / f"{row['label']}.onnx", channels, fp32=True)
        measured = interleaved_latency(files, channels, settings['size'], settings['rounds'],
                                       threads=settings['threads'])
    for row in rows:
        m = measured[row['label']]
        row['latency_ms'], row['latency_min_ms'], row['latency_max_ms'] = m['median_ms'], m['min_ms'], m['max_ms']
    medians = [r['latency_ms'] for r in rows]
    rho_kept, rho_proxy = (spearman([r[key] for r in rows], medians) for key in ('kept', 'cost'))
    for row in rows:
        row['spearman_kept'], row['spearman_proxy'] = rho_kept, rho_proxy
    return (f"Spearman rank correlation with measured latency ({settings['size']} x {settings['size']}, "
            f"{settings['rounds']} interleaved rounds, {settings['threads']} thread(s)): transformer blocks kept "
            f"{rho_kept:.3f}, proxy cost {rho_proxy:.3f}")


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    opt, hybrid = read_hybrid_options(args.opt, args.step)
    if args.step == 'distill':
        run_distill(opt, hybrid)
    else:
        run_search(opt, hybrid, args.surrogates, args.latency)
