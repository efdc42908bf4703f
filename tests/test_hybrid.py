"""Hybrid restorers: surrogate distillation, the search, assembling a hybrid from the search's output, its QDR
quantization and INT8 export, the ``basicsr hybrid`` command end to end, and its refusals."""

from __future__ import annotations

import copy
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
import yaml
from basicsr.archs import build_network
from conftest import NO_VNNI, TINY_OPTIONS, refusal
from test_layering import PACKAGE, _imports

from qdr_plugin.archs.restormer_arch import Restormer
from qdr_plugin.archs.ssm_hybrid_arch import RestormerHybrid, expand_surrogates
from qdr_plugin.deploy.onnx_export import export_onnx
from qdr_plugin.hybrid import (
    Candidate,
    SearchResult,
    SurrogateDistiller,
    beam_search,
    block_io,
    hybrid_state_dict,
    interleaved_latency,
    pareto_front,
    spearman,
    swapped,
)
from qdr_plugin.hybrid.cli import hybrid_network_opt, make_surrogates
from qdr_plugin.hybrid.scoring import mean_psnr
from qdr_plugin.prepare import prepare
from qdr_plugin.quant import QuantConfig

TINY = {'inp_channels': 1, 'out_channels': 1, 'dim': 8, 'num_blocks': [1, 1, 1, 1], 'num_refinement_blocks': 1}
SURROGATE = {'ssm_expand': 1.0, 'scan_steps': 4}


def _teacher() -> Restormer:
    torch.manual_seed(0)
    return Restormer(**TINY).eval().requires_grad_(False)


def _trained_surrogates(teacher: Restormer) -> dict:
    """Surrogates that change the output (as trained ones do): random output projections."""
    torch.manual_seed(1)
    surrogates = make_surrogates(teacher, SURROGATE)
    for s in surrogates.values():
        torch.nn.init.normal_(s.out_proj.weight, std=0.2)
        s.eval()
    return surrogates


def _pairs(count: int = 2) -> list:
    torch.manual_seed(2)
    gts = [torch.rand(1, 16, 16) for _ in range(count)]
    return [((gt + 0.1 * torch.randn_like(gt)).clamp(0, 1), gt) for gt in gts]


def test_one_teacher_forward_captures_every_block_input_and_output():
    teacher = _teacher()
    names = teacher.block_names()
    with block_io(teacher, names) as captured, torch.no_grad():
        teacher(torch.rand(1, 1, 16, 16))
    assert list(captured) == names  # forward order
    for name, (inp, out) in captured.items():
        torch.testing.assert_close(teacher.get_submodule(name)(inp), out)
    assert not any(m._forward_hooks for m in teacher.modules())  # hooks removed


def test_distillation_lowers_every_block_loss_from_the_identity_start(one_thread):
    teacher = _teacher()
    distiller = SurrogateDistiller(teacher, make_surrogates(teacher, SURROGATE), lr=5e-3)
    torch.manual_seed(3)
    images = torch.rand(2, 1, 16, 16)
    before = distiller.evaluate(images)
    assert before['total'] == pytest.approx(1.0)  # identity start: each normalised term is 1
    for _ in range(15):
        distiller.step(images)
    after = distiller.evaluate(images)
    assert after['total'] < 0.9 * before['total']
    assert all(after[name] < before[name] for name in teacher.block_names())
    state = distiller.state_dict()
    assert 'latent.0.in_proj.weight' in state and 'refinement.0.decay_bias' in state
    assert all(not p.requires_grad for p in teacher.parameters())


def test_search_scores_each_set_once_returns_a_pareto_front_and_follows_lambda(one_thread):
    teacher, pairs = _teacher(), _pairs()
    surrogates = _trained_surrogates(teacher)
    units = ['encoder_level1', 'latent', 'decoder_level1', 'refinement']
    calls = []

    def evaluate(chosen):
        calls.append(chosen)
        with swapped(teacher, {b: surrogates[b] for b in expand_surrogates(chosen, teacher.block_names())}):
            return mean_psnr(teacher, pairs)

    greedy = beam_search(units, [1] * 4, evaluate, lam=0.0, beam=1)
    assert len(calls) == len(set(calls)) == len(greedy.evaluated) == 4 * 5 // 2 + 1
    assert greedy.best.psnr == max(c.psnr for c in greedy.evaluated)  # lambda 0: the best PSNR
    front = greedy.front
    assert [c.kept for c in front] == sorted(c.kept for c in front)
    assert all(a.psnr < b.psnr for a, b in zip(front, front[1:]))
    def dominates(a, b):
        return a.kept <= b.kept and a.psnr >= b.psnr and (a.kept, a.psnr) != (b.kept, b.psnr)

    assert not any(dominates(c, f) for f in front for c in greedy.evaluated)  # no scored set beats a front point
    assert all(c in front or any(dominates(f, c) for f in front) for c in greedy.evaluated)  # the rest lose to one
    heavy = beam_search(units, [1] * 4, evaluate, lam=100.0, beam=2)
    assert heavy.best.kept == 0 and len(heavy.best.units) == 4
    mid = beam_search(units, [1] * 4, evaluate, lam=0.05, beam=2, max_evals=6)
    assert len(mid.evaluated) == 6
    assert mid.best.objective(0.05) == max(c.objective(0.05) for c in mid.evaluated)


def test_a_weighted_proxy_steers_the_search_to_the_costly_unit():
    def evaluate(chosen):  # every replacement costs the same 0.1 dB
        return 30.0 - 0.1 * len(chosen)

    counted = beam_search(['a', 'b'], [1, 1], evaluate, lam=0.08, beam=1)
    weighted = beam_search(['a', 'b'], [1, 1], evaluate, lam=0.08, beam=1, costs=[1.5, 0.5])
    assert counted.best.units == () and counted.best.cost == 2.0  # one block saves 0.08 dB: not worth 0.1 dB
    assert weighted.best.units == ('a',) and weighted.best.cost == 0.5 and weighted.best.kept == 1
    assert [c.units for c in weighted.front] == [('a', 'b'), ('a',), ()]


def test_exhaustive_search_scores_every_set_once_and_finds_what_the_greedy_walk_skips():
    from qdr_plugin.hybrid import exhaustive_search

    units = ['full', 'half', 'low']
    loss = {'full': 0.195, 'half': 0.095, 'low': 0.001}  # replacing 'low' alone costs nearly nothing ...

    def evaluate(chosen):  # ... but 1 dB more once anything else is replaced too
        calls.append(chosen)
        extra = 1.0 if 'low' in chosen and len(chosen) > 1 else 0.0
        return 30.0 - sum(loss[u] for u in chosen) - extra

    calls = []
    found = exhaustive_search(units, [1, 1, 1], evaluate, lam=0.1, costs=[2.0, 1.0, 0.1])
    assert len(calls) == len(set(calls)) == 2 ** 3 and calls[0] == ()
    assert [len(c) for c in calls] == sorted(len(c) for c in calls)  # fewest replaced first
    best = max((c for c in found.evaluated), key=lambda c: c.psnr - 0.1 * c.cost)
    assert found.best == best and found.best.units == ('full', 'half')  # keeps only the cheap 'low' unit
    calls.clear()
    greedy = beam_search(units, [1, 1, 1], evaluate, lam=0.1, beam=1, costs=[2.0, 1.0, 0.1])
    assert all('low' in c.units for c in greedy.evaluated if len(c.units) == 2)  # the walk replaced 'low' first
    assert ('full', 'half') not in {c.units for c in greedy.evaluated}
    with pytest.raises(ValueError, match='at most 12 units'):
        exhaustive_search([str(i) for i in range(13)], [1] * 13, evaluate, lam=0.1)


def test_finetune_choice_spreads_over_the_proxy_cost_and_adds_the_best():
    from qdr_plugin.hybrid.cli import finetune_choice

    evaluated = [Candidate((), 30.0, 4), Candidate(('a',), 29.9, 3), Candidate(('a', 'b'), 29.5, 2),
                 Candidate(('a', 'b', 'c'), 29.0, 1), Candidate(('a', 'b', 'c', 'd'), 28.0, 0)]
    result = SearchResult(evaluated[1], evaluated, pareto_front(evaluated), lam=0.2)
    assert finetune_choice(result, 2) == {('a', 'b', 'c', 'd'), ('a', 'b'), ('a',)}  # costs 0 and 2, and the best
    assert finetune_choice(result, 9) == {c.units for c in evaluated[1:]}  # the whole front but the teacher
    assert finetune_choice(result, 0) == {('a',)}
    assert finetune_choice(result, 3, at=[1.2]) == {('a', 'b', 'c'), ('a',)}  # the point nearest each given cost


def test_feature_size_weights_sum_to_the_block_count_and_favour_full_resolution():
    from qdr_plugin.hybrid.cli import block_weights

    teacher = _teacher()
    weights = block_weights(teacher, 'feature_size')
    assert sum(weights.values()) == pytest.approx(len(teacher.block_names()))
    assert weights['encoder_level1.0'] == pytest.approx(8 * weights['latent.0'])  # 1/8 the channels x 64 the pixels
    assert set(block_weights(teacher, 'blocks').values()) == {1.0}


def test_pareto_front_and_spearman():
    cands = [Candidate(('a',), 30.0, 2), Candidate(('b',), 29.0, 2), Candidate(('a', 'b'), 29.5, 1),
             Candidate((), 31.0, 3), Candidate(('c',), 29.0, 1)]
    assert [c.units for c in pareto_front(cands)] == [('a', 'b'), ('a',), ()]
    assert spearman([1, 2, 3, 4], [10, 20, 25, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2], [5, 6, 7]) == pytest.approx(math.sqrt(3) / 2)
    assert math.isnan(spearman([1, 1], [2, 3]))


def test_hybrid_from_the_search_output_builds_loads_quantizes_and_exports(tmp_path, onnx_parity, one_thread):
    teacher = _teacher()
    surrogates = _trained_surrogates(teacher)
    surrogate_state = {f'{n}.{k}': v for n, s in surrogates.items() for k, v in s.state_dict().items()}
    units = ('encoder_level2', 'latent.0', 'decoder_level1')
    blocks = expand_surrogates(units, teacher.block_names())
    network_opt = hybrid_network_opt({'type': 'Restormer', **TINY}, units, SURROGATE)
    net = build_network(dict(network_opt))
    assert isinstance(net, RestormerHybrid) and net.surrogates == blocks
    net.load_state_dict(hybrid_state_dict(teacher.state_dict(), surrogate_state, blocks), strict=True)
    x = torch.rand(1, 1, 20, 28)
    with torch.no_grad(), swapped(teacher, {b: surrogates[b] for b in blocks}):
        torch.testing.assert_close(net.eval()(x), teacher(x))

    torch.manual_seed(4)
    prepared = prepare(net, network_opt, QuantConfig(), [torch.rand(1, 1, 24, 24) for _ in range(2)])
    assert prepared.calibrated > 0
    path = export_onnx(prepared.network, tmp_path / 'hybrid_int8.onnx', 1, no_vnni=NO_VNNI)
    max_abs, psnr = onnx_parity(path, prepared.network, x)
    assert max_abs <= 2 / 255 and psnr >= 50  # the parity bound of docs/deployment.md


def test_interleaved_latency_reports_median_and_range_per_file(tmp_path, one_thread):
    files = {name: export_onnx(build_network({'type': 'RestormerHybrid', **TINY, 'surrogates': units, **SURROGATE}),
                               tmp_path / f'{name}.onnx', 1, fp32=True)
             for name, units in (('teacher', []), ('hybrid', ['latent']))}
    measured = interleaved_latency(files, channels=1, size=16, rounds=2, warmup=1)
    assert set(measured) == {'teacher', 'hybrid'}
    for m in measured.values():
        assert 0 < m['min_ms'] <= m['median_ms'] <= m['max_ms']


@pytest.fixture
def hybrid_options(workdir):
    """``hybrid_options(**overrides) -> path`` of a tiny ``basicsr hybrid`` options file in ``workdir``: a QDR
    training file of a Restormer teacher (a saved random one) with a ``hybrid:`` block."""
    torch.save({'params': _teacher().state_dict()}, workdir / 'teacher.pth')

    def write(**overrides) -> str:
        opt = copy.deepcopy(TINY_OPTIONS)
        opt.update(name='tiny_hybrid', network_g={'type': 'Restormer', **TINY},
                   path={'pretrain_network_g': 'teacher.pth', 'strict_load_g': True},
                   hybrid={'surrogate': dict(SURROGATE), 'distill': {'total_iter': 3, 'print_freq': 1},
                           'search': {'lambda': 0.01, 'proxy': 'feature_size', 'beam': 1, 'val_images': 1},
                           'latency': {'size': 16, 'rounds': 1}})
        opt.update(overrides)
        (workdir / 'hybrid.yml').write_text(yaml.safe_dump(opt, sort_keys=False))
        return 'hybrid.yml'

    return write


def _latency_script(monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> None:
    """Run ``benchmarks/hybrid_latency.py`` with ``argv``."""
    path = Path(__file__).resolve().parents[1] / 'benchmarks' / 'hybrid_latency.py'
    spec = importlib.util.spec_from_file_location('hybrid_latency_script', path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(sys, 'argv', ['hybrid_latency.py', *argv])
    module.main()


def test_basicsr_hybrid_distill_then_search_writes_a_hybrid_that_loads(workdir, hybrid_options, capsys, one_thread,
                                                                       monkeypatch):
    from qdr_plugin.cli import main

    path = hybrid_options()
    main(['hybrid', 'distill', '-opt', path])
    folder = workdir / 'experiments' / 'tiny_hybrid'
    log = json.loads((folder / 'distill_log.json').read_text())
    assert [e['iter'] for e in log] == [1, 2, 3] and log[-1]['total'] < log[0]['total'] + 1e-6
    main(['hybrid', 'search', '-opt', path, '--latency'])  # the measured path runs; its numbers mean nothing here
    result = json.loads((folder / 'search.json').read_text())
    assert all(r['latency_ms'] > 0 for r in result['rows']) and -1 <= result['spearman_kept_vs_latency'] <= 1
    assert -1 <= result['spearman_proxy_vs_latency'] <= 1 and result['proxy'] == 'feature_size'
    assert set(result['latency_front']) <= {r['label'] for r in result['rows']}
    assert result['evaluated'] == 8 * 9 // 2 + 1 and (folder / 'search.png').stat().st_size > 0
    best = next(r for r in result['rows'] if r['best'])
    assert any(not r['surrogates_list'] for r in result['rows'])  # the teacher is always a row
    front = [r for r in result['rows'] if r['on_front']]
    assert front and all(a['cost'] < b['cost'] and a['psnr'] < b['psnr'] for a, b in zip(front, front[1:]))
    net = build_network(dict(best['network_g']))
    net.load_state_dict(torch.load(best['checkpoint'], weights_only=True)['params'], strict=True)
    assert 'best at lambda 0.01' in capsys.readouterr().out
    _latency_script(monkeypatch, ['--search', str(folder / 'search.json'), '--sizes', '16', '--rounds', '1',
                                  '--out', str(workdir / 'latency')])
    timed = json.loads((workdir / 'latency' / 'hybrid_latency_networks.json').read_text())
    assert {r['model'] for r in timed['rows']} == {r['label'] for r in result['rows']}
    assert all(r['cost'] == next(s['cost'] for s in result['rows'] if s['label'] == r['model']) for r in timed['rows'])
    assert (workdir / 'latency' / 'hybrid_latency_networks_16.png').stat().st_size > 0
    assert 'feature_size proxy' in capsys.readouterr().out
    tuned = [r for r in result['rows'] if r['finetune']]  # the cheapest front point (all 8 stages), up to 2 more, best
    assert min(r['cost'] for r in tuned) == 0 and len(tuned) <= 4 and all(r['on_front'] or r['best'] for r in tuned)
    assert not any(r['kept'] == 9 for r in tuned)
    assert all(('finetune_options' in r) == r['finetune'] for r in result['rows'])
    fastest = next(r for r in tuned if r['cost'] == 0)
    finetune = yaml.safe_load((workdir / fastest['finetune_options']).read_text())  # checked as basicsr train does
    assert finetune['network_g'] == fastest['network_g'] and finetune['train'] == TINY_OPTIONS['train']
    assert 'hybrid' not in finetune
    assert finetune['path']['pretrain_network_g'] == fastest['checkpoint'] and finetune['model_type'] == 'QDRModel'
    main(['train', '-opt', fastest['finetune_options']])  # fine-tune (1 FP32 iteration) and QDR (2 QAT iterations)
    models = workdir / 'experiments' / finetune['name'] / 'models'
    main(['export', '-opt', fastest['finetune_options'], '--ckpt', str(models / 'net_g_latest.pth'),
          '--out', 'h.onnx'])
    assert (workdir / 'h.onnx').stat().st_size > 0


def test_basicsr_hybrid_search_exhaustive_scores_every_stage_set_and_tunes_the_given_costs(workdir, hybrid_options,
                                                                                           one_thread):
    from qdr_plugin.cli import main

    path = hybrid_options(hybrid={'surrogate': dict(SURROGATE), 'distill': {'total_iter': 1},
                                  'search': {'lambda': 0.01, 'proxy': 'feature_size', 'strategy': 'exhaustive',
                                             'val_images': 1, 'finetune_at': [1.0]}})
    main(['hybrid', 'distill', '-opt', path])
    main(['hybrid', 'search', '-opt', path])
    result = json.loads((workdir / 'experiments' / 'tiny_hybrid' / 'search.json').read_text())
    assert result['strategy'] == 'exhaustive' and result['evaluated'] == len(result['candidates']) == 2 ** 8
    front = [r for r in result['rows'] if r['on_front']]
    nearest = min(front, key=lambda r: abs(r['cost'] - 1.0) if r['surrogates_list'] else math.inf)
    assert {r['label'] for r in result['rows'] if r['finetune']} <= {nearest['label'], *(r['label'] for r in
                                                                                          result['rows'] if r['best'])}
    assert nearest['finetune'] and (workdir / nearest['finetune_options']).is_file()


@pytest.mark.parametrize(('change', 'expected'), [
    ({'hybrid': {'search': {'lamda': 0.1}}}, "hybrid.search.lamda: unknown key 'lamda'"),
    ({'hybrid': {'surrogate': {'scan_steps': 40}}}, 'hybrid.surrogate.scan_steps: must be an integer from 1 to 12'),
    ({'hybrid': {'search': {'proxy': 'macs'}}}, 'hybrid.search.proxy: must be one of'),
    ({'network_g': {'type': 'EFM', 'in_ch': 1}}, 'network_g.type: the teacher of the hybrid commands must be'),
    ({'path': {'pretrain_network_g': None}}, 'path.pretrain_network_g: the teacher needs its trained weights'),
    ({'train': {**TINY_OPTIONS['train'], 'fp32_warmup_iter': 5}},
     'train.fp32_warmup_iter: must be <= train.total_iter'),
    ({'hybrid': {'search': {'strategy': 'random'}}}, 'hybrid.search.strategy: must be one of'),
    ({'hybrid': {'search': {'finetune_at': 2}}}, 'hybrid.search.finetune_at: must be a list of proxy costs >= 0'),
], ids=['search-key-typo', 'scan-steps', 'proxy', 'teacher-type', 'no-teacher-weights', 'fine-tune-schedule',
        'strategy', 'finetune-at'])
def test_bad_hybrid_options_stop_with_one_line(hybrid_options, capsys, change, expected):
    message = refusal(['hybrid', 'distill', '-opt', hybrid_options(**change)], capsys)
    assert expected in message and '\n' not in message


def test_surrogates_of_another_teacher_are_refused_by_block(workdir, hybrid_options, capsys):
    path = hybrid_options()
    torch.save({'params': {'encoder_level1.0.in_proj.weight': torch.zeros(3, 3, 1, 1)}}, workdir / 'other.pth')
    message = refusal(['hybrid', 'search', '-opt', path, '--surrogates', 'other.pth'], capsys)
    assert message.startswith('--surrogates other.pth does not fit this teacher at block encoder_level1.0 (')
    assert message.endswith('run basicsr hybrid distill with these options first.') and '\n' not in message


def test_a_misspelt_surrogate_stage_is_refused_with_the_closest_name():
    from qdr_plugin.basicsr_options import check_network
    from qdr_plugin.option_rules import OptionsError

    with pytest.raises(OptionsError) as info:
        check_network({'network_g': {'type': 'RestormerHybrid', **TINY, 'surrogates': ['latnet']}})
    assert info.value.key_path == 'network_g.surrogates' and "Did you mean 'latent'?" in str(info.value)


def test_the_hybrid_engine_is_plain_pytorch():
    engine = ('distill', 'assemble', 'search', 'scoring', 'latency', 'options', 'report', '__init__')
    imports = {file: names for file, names in _imports(PACKAGE / 'hybrid').items()
               if file.rsplit('/', 1)[-1][:-3] in engine}
    assert len(imports) == len(engine)
    forbidden = ('basicsr', 'qdr_plugin.archs', 'qdr_plugin.models', 'qdr_plugin.hybrid.cli')
    assert not {file: sorted(n for n in names if n.startswith(forbidden)) for file, names in imports.items()
                if any(n.startswith(forbidden) for n in names)}
