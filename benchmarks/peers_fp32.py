"""Published restorers, written as archs of this package, against their published FP32 numbers.

Each model of :data:`PEERS` is built with its defaults, loads its published state dict strictly and restores every
image of its standard test set (:data:`TEST_SETS`, whole images, full set) on one thread under
``torch.inference_mode()``; PSNR / SSIM are basicsr's ``calculate_psnr`` / ``calculate_ssim`` on the 8-bit rounded
output, no border crop (docs/evaluation.md). Prints a table and writes ``benchmarks/results/peers_fp32_<model>.json``
per model (published and measured numbers, per-image PSNR, the command).

    python benchmarks/peers_fp32.py --models prenet_rain100h prenet_rain100l aodnet gcanet iat_lol_v1 iat_lol_v2_real
"""

from __future__ import annotations

# isort: off
import qdr_plugin  # noqa: F401  (first: registers the plugin and lets basicsr 1.4.2 import)
# isort: on

import argparse
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from qdr_plugin.archs import IAT, AODNet, GCANet, PReNet
from qdr_plugin.bench.report import command_line, markdown_table, run_info
from qdr_plugin.data import PairedFolderDataset, SyntheticLowLightDataset
from qdr_plugin.utils.atomic_write import atomic_write_text
from qdr_plugin.utils.evaluation import evaluate

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / 'benchmarks' / 'results'
SHARED = REPO.parent / 'shared'


@dataclass(frozen=True)
class TestSet:
    """A standard test set: its dataset under a data root, how it is scored, and what differs from the published
    protocol (``note``)."""

    build: Callable[[Path], Dataset]
    test_y_channel: bool
    note: str = ''


@dataclass(frozen=True)
class Published:
    """The published FP32 numbers: PSNR (dB), SSIM, the set they were measured on and where they are published."""

    psnr: float
    ssim: float | None
    on: str
    source: str


@dataclass(frozen=True)
class Peer:
    """A published model: arch builder (defaults = published configuration), weights file under the weights root,
    test set name (a key of :data:`TEST_SETS`), published numbers, and what the comparison needs said."""

    build: Callable[[], nn.Module]
    weights: str
    test_set: str
    published: Published
    note: str = ''


TEST_SETS: dict[str, TestSet] = {
    'Rain100H': TestSet(
        lambda root: PairedFolderDataset({'phase': 'test', 'dataroot_lq': str(root / 'Rain100H' / 'rainy'),
                                          'dataroot_gt': str(root / 'Rain100H' / 'norain')}),
        test_y_channel=True,
        note='100 pairs, 480x320: this copy is cropped by one pixel from the usual 481x321.'),
    'SOTS-indoor': TestSet(
        lambda root: PairedFolderDataset({'phase': 'test', 'dataroot_lq': str(root / 'SOTS-indoor' / 'hazy'),
                                          'dataroot_gt': str(root / 'SOTS-indoor' / 'clear'),
                                          'pairing': {'lq': '{scene}_{level}', 'gt': '{scene}'}}),
        test_y_channel=False,
        note='150 of the 500 SOTS-indoor images (haze levels 1, 5, 9 of 50 scenes); published numbers use all 500.'),
    'CBSD68-lowlight': TestSet(
        lambda root: SyntheticLowLightDataset({'phase': 'test', 'dataroot_gt': str(root / 'CBSD68')}),
        test_y_channel=False,
        note='CBSD68 darkened by SyntheticLowLightDataset (image i seeded with i); LOL is not available here.'),
}
"""The test sets by name; a model names its set in :attr:`Peer.test_set`."""

PEERS: dict[str, Peer] = {
    'prenet_rain100h': Peer(
        PReNet, 'PReNet/PReNet6_Rain100H.pth', 'Rain100H',
        Published(29.46, 0.899, 'Rain100H', 'Ren et al., CVPR 2019 (PReNet6), Y channel'),
        note='The published test script stores the output truncated to 8 bits (uint8(255 x)), not rounded, and '
             'scores it with MATLAB (rgb2ycbcr, psnr, ssim).'),
    'prenet_rain100l': Peer(
        PReNet, 'PReNet/PReNet6_Rain100L.pth', 'Rain100H',
        Published(37.48, 0.979, 'Rain100L', 'Ren et al., CVPR 2019 (PReNet6), Y channel'),
        note='Trained on Rain100L, whose test set is not available here: scored on Rain100H as a plausibility '
             'check (light-rain weights on heavy rain), not comparable with the published number.'),
    'aodnet': Peer(
        AODNet, 'AODNet/aodnet_dehazer.pth', 'SOTS-indoor',
        Published(19.06, 0.850, 'SOTS-indoor (500 images)',
                  'AOD-Net (Li et al., ICCV 2017) as the dehazing literature tabulates it on SOTS-indoor; the '
                  'PyTorch re-implementation these weights come from publishes no number (about 20 dB)'),
        note='The weights are a re-implementation (MayankSingal/PyTorch-Image-Dehazing) trained on the training '
             "set of the AOD-Net authors' project page, not the authors' model."),
    'gcanet': Peer(
        GCANet, 'GCANet/gcanet_dehaze.pth', 'SOTS-indoor',
        Published(30.23, 0.980, 'SOTS-indoor (500 images)', 'Chen et al., WACV 2019 (GCANet), RGB'),
        note='The published test script rounds the output on the 0-255 scale as here; its scoring code is not '
             'published.'),
    'iat_lol_v1': Peer(
        IAT, 'IAT/IAT_lol_v1.pth', 'CBSD68-lowlight',
        Published(23.38, 0.809, 'LOL-v1 (15 images)', 'Cui et al., BMVC 2022 (IAT), RGB'),
        note='LOL-v1 is not available here: scored on CBSD68-lowlight, for which no number is published. The '
             'published evaluation scores the float output (not rounded to 8 bits) with IQA_pytorch SSIM.'),
    'iat_lol_v2_real': Peer(
        partial(IAT, input_norm=True), 'IAT/IAT_lol_v2_real.pth', 'CBSD68-lowlight',
        Published(23.50, 0.824, 'LOL-v2-real (100 images)', 'Cui et al., BMVC 2022 (IAT), RGB'),
        note='LOL-v2-real is not available here: scored on CBSD68-lowlight, for which no number is published. '
             'The published evaluation scores the float output (not rounded to 8 bits) with IQA_pytorch SSIM. '
             'These weights read the input normalised to [-1, 1] (IAT(input_norm=True)).'),
}
"""The models by name: ``--models`` picks from these."""

COLUMNS = [('model', 'model', ''), ('test_set', 'test set', ''), ('images', 'images', 'd'),
           ('scored_on', 'scored on', ''), ('psnr', 'PSNR (dB)', '.3f'), ('ssim', 'SSIM', '.4f'),
           ('published_psnr', 'published PSNR', '.2f'), ('published_ssim', 'published SSIM', '.3f'),
           ('published_on', 'published on', '')]


def load_peer(name: str, weights_root: Path) -> nn.Module:
    """Model ``name`` of :data:`PEERS` with its published weights loaded strictly, in eval mode."""
    peer = PEERS[name]
    net = peer.build()
    net.load_state_dict(torch.load(weights_root / peer.weights, map_location='cpu', weights_only=True))
    return net.eval()


def score(name: str, data_root: Path, weights_root: Path) -> dict[str, Any]:
    """PSNR / SSIM of model ``name`` on its whole test set, the per-image PSNR by input file name, the number of
    images and the arch's class name."""
    peer = PEERS[name]
    test_set = TEST_SETS[peer.test_set]
    dataset = test_set.build(data_root)
    net = load_peer(name, weights_root)

    def restore(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return net(x)

    result = evaluate(restore, dataset, test_y_channel=test_set.test_y_channel, desc=name)
    names = [Path(path).name for path in dataset.paths]
    return {'arch': type(net).__name__, 'psnr': result['psnr'], 'ssim': result['ssim'], 'images': len(dataset),
            'psnr_per_image': dict(zip(names, result['psnr_per_image']))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--models', nargs='+', choices=list(PEERS), default=list(PEERS))
    parser.add_argument('--data-root', type=Path, default=SHARED / 'datasets')
    parser.add_argument('--weights-root', type=Path, default=SHARED / 'weights')
    parser.add_argument('--out', type=Path, default=RESULTS_DIR)
    args = parser.parse_args()
    torch.set_num_threads(1)

    command = command_line()
    rows = []
    for name in args.models:
        peer = PEERS[name]
        test_set = TEST_SETS[peer.test_set]
        ours = score(name, args.data_root, args.weights_root)
        info = run_info(command, 1, model=name, arch=ours['arch'], weights=peer.weights,
                        test_set=peer.test_set, scored_on='Y' if test_set.test_y_channel else 'RGB',
                        protocol='basicsr calculate_psnr / calculate_ssim, 8-bit rounded output, crop_border 0',
                        published=asdict(peer.published), ours={k: ours[k] for k in ('psnr', 'ssim', 'psnr_per_image')},
                        images=ours['images'], notes=[n for n in (peer.note, test_set.note) if n])
        atomic_write_text(args.out / f'peers_fp32_{name}.json', json.dumps(info, indent=2) + '\n')
        rows.append({'model': name, 'test_set': peer.test_set, 'images': ours['images'],
                     'scored_on': info['scored_on'], 'psnr': ours['psnr'], 'ssim': ours['ssim'],
                     'published_psnr': peer.published.psnr, 'published_ssim': peer.published.ssim,
                     'published_on': peer.published.on})
        print(f'{name}: PSNR {ours["psnr"]:.3f} dB, SSIM {ours["ssim"]:.4f} on {ours["images"]} images '
              f'(published {peer.published.psnr} / {peer.published.ssim} on {peer.published.on})', flush=True)
    print(markdown_table(rows, COLUMNS))


if __name__ == '__main__':
    main()
