"""IAT's published weights on real low-light photos (LowLight-real, no ground truth): one picture to look at.

Each row is one photo: the input, then the output of every IAT model of ``peers_fp32.PEERS`` (``iat_lol_v1``,
``iat_lol_v2_real``), restored whole on one thread under ``torch.inference_mode()``; panels are shown
:data:`PANEL_SIDE` pixels on the longer side. Writes ``benchmarks/results/peers_iat_lowlight_real.png``.

    python benchmarks/peers_iat_lowlight_real.py
"""

from __future__ import annotations

# isort: off
import qdr_plugin  # noqa: F401  (first: registers the plugin and lets basicsr 1.4.2 import)
# isort: on

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
from basicsr.utils import img2tensor, tensor2img
from peers_fp32 import RESULTS_DIR, SHARED, load_peer

from qdr_plugin.bench.pictures import side_by_side
from qdr_plugin.utils.atomic_write import atomic_write_bytes

MODELS = ('iat_lol_v1', 'iat_lol_v2_real')
PHOTOS = ('easy_0016.png', 'medium_00051.png', 'medium_2062.jpg', 'difficult_1482.png', 'difficult_2015_02057.jpg')
"""Photos of ``LowLight-real`` (one easy, two medium, two difficult), in picture order."""
PANEL_SIDE = 320
"""Longer side of a panel in pixels (``cv2.INTER_AREA``)."""


def _shrink(image: np.ndarray) -> np.ndarray:
    """``image`` resized to :data:`PANEL_SIDE` pixels on its longer side."""
    factor = PANEL_SIDE / max(image.shape[:2])
    size = (round(image.shape[1] * factor), round(image.shape[0] * factor))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def picture(photos: list[Path], weights_root: Path) -> np.ndarray:
    """The BGR picture: one row per photo (input, then each model of :data:`MODELS`), rows left-aligned on white."""
    nets = {name: load_peer(name, weights_root) for name in MODELS}
    rows = []
    for path in photos:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        x = img2tensor(image.astype(np.float32) / 255.0, bgr2rgb=True, float32=True).unsqueeze(0)
        panels = [(_shrink(image), f'input {path.name}')]
        with torch.inference_mode():
            panels += [(_shrink(tensor2img([net(x)])), name) for name, net in nets.items()]
        rows.append(side_by_side(panels, (panels[0][0].shape[1], panels[0][0].shape[0])))
    width = max(row.shape[1] for row in rows)
    padded = [np.pad(row, ((0, 8), (0, width - row.shape[1]), (0, 0)), constant_values=255) for row in rows]
    return np.concatenate(padded, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--data-root', type=Path, default=SHARED / 'datasets')
    parser.add_argument('--weights-root', type=Path, default=SHARED / 'weights')
    parser.add_argument('--out', type=Path, default=RESULTS_DIR / 'peers_iat_lowlight_real.png')
    args = parser.parse_args()
    torch.set_num_threads(1)
    image = picture([args.data_root / 'LowLight-real' / name for name in PHOTOS], args.weights_root)
    ok, encoded = cv2.imencode('.png', image)
    if not ok:
        raise RuntimeError(f'PNG encoding of a {image.shape} picture failed')
    atomic_write_bytes(args.out, encoded.tobytes())
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
