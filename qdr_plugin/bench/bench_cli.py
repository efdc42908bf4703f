"""``basicsr bench``: score models (PyTorch checkpoints and ONNX files, FP32 and INT8) on the standard sets of a
task (denoising, super-resolution, deraining, dehazing, low light) or on datasets of the options file, with the
protocol of docs/evaluation.md, time them, and write a table with the retention summary, JSON, CSV, plots and
side-by-side pictures; ``--sensitivity`` adds the per-layer quantization sensitivity of one checkpoint, ``--detect``
the downstream detection on the clean, degraded and restored images."""

from __future__ import annotations

import argparse
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from qdr_plugin.deploy.kernel_report import kernel_report
from qdr_plugin.deploy.options import read_options
from qdr_plugin.deploy.ort_profile import op_times
from qdr_plugin.detection import FastestDet
from qdr_plugin.errors import UserError
from qdr_plugin.quant import is_quantized
from qdr_plugin.utils.output_paths import check_output_folder

from .detection import (
    DEFAULT_DETECTOR,
    DETECT_COLUMNS,
    DETECT_PICTURES,
    DetectionCollector,
    DetectionSettings,
    check_detection_run,
    detection_note,
    detection_picture_names,
    detection_rows,
    write_detection_pictures,
)
from .models import BenchModel, load_model, parse_model_spec
from .pictures import PICTURES, picture_names, write_pictures
from .plots import plot_per_image_diff, plot_psnr_vs_fps, plot_sensitivity
from .protocol import (
    DEFAULT_SIGMAS,
    DENOISE_SETS,
    TASKS,
    BenchSet,
    denoise_set,
    options_set,
    paired_set,
    sr_set,
    task_sets,
)
from .report import SENSITIVITY_COLUMNS, SUMMARY_COLUMNS, bench_columns, markdown_table, run_info, write_results
from .runner import Outputs, add_retention, retention_summary, run_benchmark
from .sensitivity import layer_sensitivity, quantize_from_options, suggest_keep_fp32
from .timing import frames_per_second

DEFAULT_DATA_ROOT = Path(__file__).resolve().parents[2].parent / 'shared' / 'datasets'
"""``../shared/datasets`` next to the repository."""
BENCH_PLOTS = ('bench_psnr_vs_fps.png', 'bench_per_image_diff.png')


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog='basicsr bench', description=__doc__)
    parser.add_argument('--model', action='append', required=True, metavar='NAME=PATH',
                        help='a model to bench (repeat): a .pth checkpoint (PyTorch; a QDR checkpoint runs as the '
                        'fake-quantized INT8 network) or an .onnx file (ONNX Runtime, CPU; INT8 when it holds '
                        'quantization nodes)')
    parser.add_argument('-opt', help='options YAML: network_g (needed for .pth models), quant, datasets.train, scale')
    parser.add_argument('--task', choices=TASKS, default='denoise')
    parser.add_argument('--datasets', nargs='+', metavar='NAME',
                        help='sets of the task (default: all of them; denoise: those with the models\' channels): '
                        + '; '.join(f'{task}: {", ".join(task_sets(task))}' for task in TASKS)
                        + '; or a block of the -opt file\'s datasets: (e.g. val), scored as its val.metrics.psnr says')
    parser.add_argument('--sigmas', nargs='+', type=float, default=list(DEFAULT_SIGMAS),
                        help='noise levels on the 0..255 scale (denoise; default 15 25 50)')
    parser.add_argument('--scale', type=int, help='super-resolution scale (sr; default: the options\' scale)')
    parser.add_argument('--data-root', type=Path, default=DEFAULT_DATA_ROOT,
                        help='the folder holding the sets (default: ../shared/datasets next to the repository)')
    parser.add_argument('--max-images', type=int, help='score only the first N images of each set (quick checks)')
    parser.add_argument('--pictures', type=int, default=3, metavar='N',
                        help=f'side-by-side pictures (input | each model | ground truth) of the first N images of '
                        f'each set in <out>/{PICTURES}/ (default 3, 0: none)')
    parser.add_argument('--reference', metavar='NAME',
                        help='the model retention and drop are measured against (default: the first FP32 model)')
    parser.add_argument('--out', type=Path, default=Path('results/bench'),
                        help='folder for bench.json/.csv/.md and the plots (default results/bench); a folder '
                        'already holding them is refused, see --overwrite')
    parser.add_argument('--overwrite', action='store_true', help='replace the result files already in --out')
    parser.add_argument('--runs', type=int, default=20, help='timed runs per model; the median counts (default 20)')
    parser.add_argument('--warmup', type=int, default=3, help='untimed runs before timing (default 3)')
    parser.add_argument('--rounds', type=int, default=5,
                        help='the ONNX models are timed in this many interleaved passes of runs / rounds each '
                        '(default 5)')
    parser.add_argument('--size', type=int, default=256, help='side of the 1 x C x S x S timing input (default 256)')
    parser.add_argument('--no-speed', action='store_true', help='skip the timing (no FPS, no PSNR-vs-FPS plot)')
    parser.add_argument('--profile', action='store_true',
                        help='INT8 ONNX models: also run each in ONNX Runtime\'s profiler (at --size) and name the '
                        'float op types that take the most kernel time')
    parser.add_argument('--threads', type=int, default=torch.get_num_threads(),
                        help='PyTorch and ONNX Runtime intra-op threads (default: the number of cores)')
    parser.add_argument('--sensitivity', nargs='?', const='', metavar='NAME',
                        help='also measure per-layer sensitivity of this .pth model (default: the first one) on the '
                        'first dataset with ground truth, at its first noise level / scale')
    parser.add_argument('--keep-db', type=float, default=0.1,
                        help='sensitivity: suggest keep_fp32 for layers losing at least this many dB (default 0.1)')
    parser.add_argument('--calib-images', type=int, default=16,
                        help='sensitivity of an FP32 checkpoint: training crops to calibrate on (default 16)')
    detect = parser.add_argument_group('downstream detection (docs/evaluation.md)')
    detect.add_argument('--detect', nargs='?', const=DEFAULT_DETECTOR, type=Path, metavar='DETECTOR.onnx',
                        help='also run a FastestDet-format ONNX detector on the clean images, the degraded inputs and '
                        'every model\'s outputs, and score mAP against pseudo-labels from the clean images (default '
                        'detector: ../shared/weights/FastestDet/FastestDet.onnx next to the repository)')
    detect.add_argument('--detect-names', type=Path, metavar='FILE',
                        help='class names, one per line (default: coco.names beside the detector)')
    detect.add_argument('--label-score', type=float, default=DetectionSettings.label_score,
                        help='a clean-image detection scoring at least this is a pseudo-label (default 0.5)')
    detect.add_argument('--min-boxes', type=int, default=DetectionSettings.min_boxes,
                        help='a set with fewer pseudo-boxes is named too small for a stable mAP (default 100)')
    detect.add_argument('--bootstrap', type=int, default=DetectionSettings.resamples,
                        help='image bootstrap draws for the spread of mAP@0.5 and of the gains (default 100, 0: none)')
    return parser


def _output_names(args: argparse.Namespace, sets: Sequence[BenchSet] = ()) -> list[str]:
    """The files a run writes into ``--out``; the pictures' names once the ``sets`` are known."""
    names = [f'bench.{suffix}' for suffix in ('json', 'csv', 'md')] + list(BENCH_PLOTS)
    if args.sensitivity is not None:
        names += [f'sensitivity.{suffix}' for suffix in ('json', 'csv', 'md', 'png')]
    if args.detect is not None:
        names += [f'detect.{suffix}' for suffix in ('json', 'csv', 'md')] + detection_picture_names(sets, args.pictures)
    return names + picture_names(sets, args.pictures)


def _check_numbers(args: argparse.Namespace) -> None:
    for flag, value, low in (('--runs', args.runs, 1), ('--warmup', args.warmup, 0), ('--size', args.size, 8),
                             ('--threads', args.threads, 1), ('--calib-images', args.calib_images, 1),
                             ('--pictures', args.pictures, 0), ('--min-boxes', args.min_boxes, 1),
                             ('--bootstrap', args.bootstrap, 0)):
        if value < low:
            raise ValueError(f'{flag} must be >= {low}, got {value}.')
    if args.max_images is not None and args.max_images < 1:
        raise ValueError(f'--max-images must be >= 1, got {args.max_images}.')
    if not 0 < args.label_score <= 1:
        raise ValueError(f'--label-score must be in (0, 1] (a detection score), got {args.label_score}.')
    if any(s < 0 for s in args.sigmas):
        raise ValueError(f'--sigmas must be >= 0 (noise std on the 0..255 scale), got {args.sigmas}.')


def _load_models(args: argparse.Namespace, opt: dict[str, Any] | None) -> list[BenchModel]:
    specs = [parse_model_spec(text) for text in args.model]
    names = [s.name for s in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f'--model names must be unique, {", ".join(duplicates)} is given more than once.')
    for name in (args.reference, args.sensitivity or None):
        if name is not None and name not in names:
            raise ValueError(f"'{name}' is not one of the --model names ({', '.join(names)}).")
    return [load_model(spec, opt, args.threads, args.size) for spec in specs]


def _option_blocks(opt: Mapping[str, Any] | None) -> list[str]:
    """The names of the options file's ``datasets:`` blocks."""
    return [key for key, block in ((opt or {}).get('datasets') or {}).items() if isinstance(block, Mapping)]


def _default_sets(args: argparse.Namespace, models: list[BenchModel]) -> list[str]:
    """All sets of the task; for denoising, those with the models' channel count."""
    if args.task != 'denoise':
        return list(task_sets(args.task))
    channels = sorted({m.channels for m in models})
    if len(channels) != 1:
        raise ValueError(f'the models take {" and ".join(map(str, channels))} channels; give --datasets, or '
                         'bench gray and colour models in separate runs.')
    return [name for name, c in DENOISE_SETS.items() if c == channels[0]]


def _standard_sets(args: argparse.Namespace, opt: dict[str, Any] | None, name: str) -> list[BenchSet]:
    """The task's standard set ``name``: at each ``--sigmas`` for denoising, at the scale for super-resolution."""
    root = args.data_root
    if args.task == 'denoise':
        return [denoise_set(root, name, sigma, args.max_images) for sigma in args.sigmas]
    if args.task == 'sr':
        scale = args.scale if args.scale is not None else (opt or {}).get('scale')
        if scale is None:
            raise ValueError('--task sr needs the scale: give --scale N (or scale: N in the options file).')
        return [sr_set(root, name, int(scale), args.max_images)]
    return [paired_set(root, name, args.max_images)]


def _bench_sets(args: argparse.Namespace, opt: dict[str, Any] | None, models: list[BenchModel]) -> list[BenchSet]:
    """The sets ``--datasets`` names (default: :func:`_default_sets`): standard sets of the task, or blocks of the
    options file's ``datasets:``."""
    known, blocks = task_sets(args.task), _option_blocks(opt)
    names = list(dict.fromkeys(args.datasets)) if args.datasets else _default_sets(args, models)
    for name in names:
        if name not in known and name not in blocks:
            where = (f'a block of the -opt file\'s datasets: ({", ".join(blocks)})' if blocks else
                     'a datasets: block of the -opt file (it has none)' if opt is not None else
                     'a datasets: block of an options file given with -opt X.yml')
            raise ValueError(f"unknown dataset '{name}' for --task {args.task}; choose from {', '.join(known)}, or "
                             f'name {where}.')
    sets = []
    for name in names:
        sets += (_standard_sets(args, opt, name) if name in known
                 else [options_set(opt, name, args.task, args.max_images)])
    labels = [s.label for s in sets]
    twice = sorted({label for label in labels if labels.count(label) > 1})
    if twice:
        raise ValueError(f'--datasets: two sets are named {", ".join(twice)} (a datasets: block\'s name is its set '
                         'name); give the block another name.')
    return sets


def _kernel_reports(args: argparse.Namespace, models: list[BenchModel]) -> dict[str, dict[str, Any]]:
    """For every INT8 ONNX model: print which convolutions and element-wise ops ONNX Runtime runs as integer
    kernels and which in float (with ``--profile``, the float op types taking the most time); returns the reports
    by model name for the run information."""
    reports = {}
    for model in models:
        if model.runtime != 'onnxruntime' or model.precision != 'int8':
            continue
        report = kernel_report(model.path)
        times = op_times(model.path, args.size, args.threads) if args.profile else None
        print('\n'.join([f'{model.name}:', *(f'  {line}' for line in report.lines(times))]), file=sys.stderr)
        reports[model.name] = {**report.as_dict(), **({'op_ms_per_run': times} if times else {})}
    return reports


def _speeds(args: argparse.Namespace, models: list[BenchModel]) -> dict[str, float | None]:
    """FPS of every model. The ONNX Runtime models are timed interleaved, so their ratios survive a drifting
    machine; a PyTorch model is timed on its own first (its OpenMP threads keep spinning after a call and would slow
    the ONNX Runtime call after it)."""
    if args.no_speed:
        return {m.name: None for m in models}
    groups = [[m] for m in models if m.runtime != 'onnxruntime'] + [[m for m in models if m.runtime == 'onnxruntime']]
    speeds = {}
    for group in filter(None, groups):
        names = ', '.join(f'{m.name} ({m.runtime}, {m.precision})' for m in group)
        print(f'timing {names} on 1xCx{args.size}x{args.size}, median of {args.runs} runs each'
              f'{", interleaved" if len(group) > 1 else ""} ...', file=sys.stderr, flush=True)
        restorers = {m.name: (m.restore, m.channels) for m in group}
        speeds.update(frames_per_second(restorers, args.size, args.runs, args.warmup, rounds=args.rounds))
    return {m.name: speeds[m.name] for m in models}


def _sensitivity_model(args: argparse.Namespace, models: list[BenchModel]) -> BenchModel:
    """The checkpoint ``--sensitivity`` names, or the first one."""
    checkpoints = {m.name: m for m in models if m.network is not None}
    name = args.sensitivity or next(iter(checkpoints), None)
    if name not in checkpoints:
        raise ValueError('--sensitivity needs a .pth model (a PyTorch checkpoint, not an ONNX file): add one with '
                         '--model NAME=X.pth and name it, --sensitivity NAME.')
    return checkpoints[name]


def _sensitivity_set(sets: Sequence[BenchSet]) -> BenchSet:
    """The first set with ground truth: the one the sensitivity is measured on."""
    scored = next((s for s in sets if s.has_gt), None)
    if scored is None:
        raise ValueError('--sensitivity needs a set with ground truth; add one to --datasets.')
    return scored


def _sensitivity(args: argparse.Namespace, opt: dict[str, Any], model: BenchModel, bench_set: BenchSet,
                 command: str) -> None:
    net = model.network
    if not is_quantized(net):
        print(f'{model.name} is FP32: quantizing it with the options\' quant block, calibrating on '
              f'{args.calib_images} training crops ...', file=sys.stderr, flush=True)
        net = quantize_from_options(net, opt, args.calib_images)
    result = layer_sensitivity(net, bench_set, model.name)
    keep = suggest_keep_fp32(result['layers'], args.keep_db)
    where = f'{bench_set.name}, {bench_set.setting}, {len(bench_set.images)} images'
    info = run_info(command, args.threads, model=model.name, path=str(model.path), dataset=bench_set.name,
                    sigma=bench_set.sigma, scale=bench_set.scale, images=bench_set.images,
                    fp32_psnr=result['fp32_psnr'], int8_psnr=result['int8_psnr'], keep_db=args.keep_db,
                    keep_fp32=keep)
    summary = (f'{model.name} on {where}: FP32 {result["fp32_psnr"]:.3f} dB, all layers INT8 '
               f'{result["int8_psnr"]:.3f} dB.\nLayers losing >= {args.keep_db:g} dB alone: '
               f'quant.keep_fp32: [{", ".join(keep)}]')
    table = markdown_table(result['layers'], SENSITIVITY_COLUMNS)
    paths = write_results(args.out, 'sensitivity', result['layers'], info, table, summary)
    title = f'{model.name}, {where}: FP32 {result["fp32_psnr"]:.2f} dB'
    png = plot_sensitivity(result['layers'], args.out / 'sensitivity.png', title)
    print(f'\nPer-layer sensitivity (only that layer quantized), {where}\n\n{table}\n\n{summary}')
    print('wrote', ', '.join(str(p) for p in [*paths.values(), png]))


def _notes(sets: Sequence[BenchSet], reference: str | None) -> dict[str, str]:
    """What a reader must know about a set, by name: its own note, or that it has no ground truth."""
    notes = {}
    for bench_set in sets:
        if not bench_set.has_gt:
            notes[bench_set.name] = (f'{bench_set.name} has no ground truth: its PSNR / SSIM measure fidelity to the '
                                     f'output of {reference} (INT8 against FP32 when {reference} is the FP32 model); '
                                     f'the row of {reference} has none.')
        elif bench_set.note:
            notes[bench_set.name] = bench_set.note
    return notes


def _dataset_info(sets: Sequence[BenchSet], notes: dict[str, str]) -> dict[str, dict[str, Any]]:
    """The JSON record of the sets, by name: folder, images, what they are scored on, ground truth or not, note."""
    return {s.name: {'folder': str(s.folder), 'images': s.images, 'scored_on': s.scored_on, 'ground_truth': s.has_gt,
                     **({'note': notes[s.name]} if s.name in notes else {})}
            for s in sets}


def _report_note(reference: str | None, notes: dict[str, str], summary: list[dict[str, Any]] | None) -> str:
    """The text under the results table: what retention is, the sets' notes, the retention summary."""
    if reference is None:
        return '\n\n'.join(['no FP32 model: no retention (give --reference NAME).', *notes.values()])
    head = f'retention = PSNR / PSNR of {reference} on the same images; drop = the difference in dB.'
    if summary:
        tail = (f'Retention summary against {reference} (mean over the sets scored against ground truth, one term '
                f'per set and noise level / scale):\n\n{markdown_table(summary, SUMMARY_COLUMNS)}')
    else:
        tail = f'no retention summary: no model besides {reference} on a set with ground truth.'
    return '\n\n'.join([head, *notes.values(), tail])


def _pictures(args: argparse.Namespace, sets: Sequence[BenchSet], models: list[BenchModel],
              rows: list[dict[str, Any]], outputs: Outputs, reference: str | None) -> list[Path]:
    names = [m.name for m in models]
    return [path for bench_set in sets for path in write_pictures(args.out, bench_set, names, rows, outputs,
                                                                   reference)]


def _detector(args: argparse.Namespace, sets: Sequence[BenchSet],
              models: list[BenchModel]) -> DetectionCollector | None:
    """With ``--detect``: the detector, loaded and checked before any model runs, wrapped to see every output."""
    if args.detect is None:
        return None
    check_detection_run(sets, models)
    return DetectionCollector(FastestDet(args.detect, args.detect_names, args.threads))


def _detection(args: argparse.Namespace, sets: Sequence[BenchSet], models: list[BenchModel],
               collector: DetectionCollector, outputs: Outputs, reference: str | None, command: str) -> None:
    settings = DetectionSettings(args.label_score, args.min_boxes, args.bootstrap)
    print(f'scoring detection on {len(sets)} set{"s" * (len(sets) > 1)} '
          f'({args.bootstrap} bootstrap draws) ...', file=sys.stderr, flush=True)
    rows, summaries, views = detection_rows(sets, models, collector, reference, settings)
    note = detection_note(summaries, reference, settings, collector.detector)
    info = run_info(command, args.threads, detector=str(args.detect), label_score=args.label_score,
                    min_boxes=args.min_boxes, bootstrap=args.bootstrap, reference=reference,
                    data_root=str(args.data_root), max_images=args.max_images, sets=summaries)
    table = markdown_table(rows, DETECT_COLUMNS)
    paths = write_results(args.out, 'detect', rows, info, table, note)
    names = [m.name for m in models]
    pictures = [path for s in sets for path in write_detection_pictures(
        args.out, s, views[s.label], names, collector, outputs, settings, args.pictures)]
    print(f'\nDownstream detection\n\n{table}\n\n{note}')
    print('wrote', ', '.join(str(p) for p in paths.values())
          + (f' and {len(pictures)} picture{"s" * (len(pictures) > 1)} in {args.out / DETECT_PICTURES}' if pictures
             else ''))


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``basicsr bench``; a problem the user can fix raises :class:`~qdr_plugin.errors.UserError`
    (the ``basicsr`` command prints it as one line)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    command = shlex.join(['basicsr', 'bench', *argv])
    try:
        _check_numbers(args)
        check_output_folder(args.out, '--out', _output_names(args), args.overwrite)
        torch.set_num_threads(args.threads)
        opt = read_options(args.opt) if args.opt is not None else None
        models = _load_models(args, opt)
        sensitivity_model = _sensitivity_model(args, models) if args.sensitivity is not None else None
        sets = _bench_sets(args, opt, models)
        sensitivity_set = _sensitivity_set(sets) if sensitivity_model is not None else None
        check_output_folder(args.out, '--out', _output_names(args, sets), args.overwrite)
        collector = _detector(args, sets, models)
        reference = args.reference or next((m.name for m in models if m.precision == 'fp32'), None)
        kernels = _kernel_reports(args, models)
        speeds = _speeds(args, models)
        rows, outputs = run_benchmark(models, sets, speeds, reference, args.pictures, collector)
        summary = None
        if reference is not None:
            add_retention(rows, reference)
            summary = retention_summary(rows, reference)
        notes = _notes(sets, reference)
        info = run_info(command, args.threads, task=args.task, reference=reference, speed=not args.no_speed,
                        runs=args.runs, warmup=args.warmup, size=args.size,
                        data_root=str(args.data_root), max_images=args.max_images,
                        datasets=_dataset_info(sets, notes), summary=summary, kernels=kernels)
        table = markdown_table(rows, bench_columns(rows))
        note = _report_note(reference, notes, summary)
        paths = write_results(args.out, 'bench', rows, info, table, note)
        plots = [plot_psnr_vs_fps(rows, args.out / BENCH_PLOTS[0])]
        if reference is not None:
            plots.append(plot_per_image_diff(rows, reference, args.out / BENCH_PLOTS[1]))
        pictures = _pictures(args, sets, models, rows, outputs, reference)
        print(f'\n{table}\n\n{note}')
        print('wrote', ', '.join(str(p) for p in [*paths.values(), *plots] if p is not None)
              + (f' and {len(pictures)} picture{"s" * (len(pictures) > 1)} in {args.out / PICTURES}' if pictures
                 else ''))
        if collector is not None:
            _detection(args, sets, models, collector, outputs, reference, command)
        if sensitivity_model is not None:
            _sensitivity(args, opt, sensitivity_model, sensitivity_set, command)
    except UserError:
        raise
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        message = str(error).strip()
        raise UserError(message.splitlines()[0] if message else type(error).__name__) from error
