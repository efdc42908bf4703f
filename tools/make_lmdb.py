"""``python tools/make_lmdb.py <image_folder> <out.lmdb> [--n-thread 2] [--compress-level 1] [--overwrite]``: pack a
folder of images into basicsr's LMDB layout (``basicsr.utils.lmdb_util.make_lmdb_from_imgs``) for
``io_backend: {type: lmdb}`` (e.g. ``GaussianNoiseDataset`` with ``dataroot_gt: <out.lmdb>``).

The images are the folder's files ending in .png .jpg .jpeg .bmp .tif .tiff (case-insensitive, not recursive, hidden
files skipped: the files ``GaussianNoiseDataset`` reads from a folder); the LMDB keys are the file names without
extension and ``meta_info.txt`` lists ``<key>.png (h,w,c) <compress level>``. Each image is stored as read
(``cv2.IMREAD_UNCHANGED``: gray stays gray, 16-bit stays 16-bit), PNG-encoded (lossless) at ``--compress-level``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from concurrent.futures import ThreadPoolExecutor
from os import path as osp

import cv2

from qdr_plugin.data.gaussian_noise_dataset import IMG_EXTENSIONS  # first: registers the plugin's torchvision alias
from qdr_plugin.errors import UserError
from qdr_plugin.utils.output_paths import check_writable_folder

HEADROOM = 10 * 1024**2  # bytes added to the LMDB map size


class MakeLmdbError(Exception):
    """A problem with the input folder or the output path (reported as one line, exit status 1)."""


def image_names(folder: str) -> list[str]:
    """The image file names in ``folder`` (sorted), checked: readable folder, at least one image, unique ASCII
    keys (file names without extension)."""
    if not osp.isdir(folder):
        raise MakeLmdbError(f"image folder '{folder}' does not exist (or is not a folder).")
    names = sorted(
        entry.name
        for entry in os.scandir(folder)
        if entry.is_file() and not entry.name.startswith('.') and entry.name.lower().endswith(IMG_EXTENSIONS)
    )
    if not names:
        raise MakeLmdbError(f"image folder '{folder}' holds no images ({', '.join(IMG_EXTENSIONS)}; not recursive).")
    keys: dict[str, str] = {}
    for name in names:
        key = osp.splitext(name)[0]
        if not key.isascii():
            raise MakeLmdbError(f"'{name}': LMDB keys must be ASCII; rename the file.")
        if key in keys:
            raise MakeLmdbError(f"'{keys[key]}' and '{name}' would have the same LMDB key '{key}'; rename one.")
        keys[key] = name
    return names


def _decoded_size(path: str) -> int:
    img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise MakeLmdbError(f"cannot read image '{path}' (corrupt or unsupported).")
    return img.nbytes


def map_size_for(folder: str, names: list[str], n_thread: int) -> int:
    """LMDB map size: 10 x the decoded size of all images + 10 MB (basicsr's estimate, 10 x the PNG size of the
    first image x the count, is too small for tiny or unequal images). Every image is decoded once here, so an
    unreadable one is reported before anything is written."""
    with ThreadPoolExecutor(max(n_thread, 1)) as pool:
        sizes = list(pool.map(_decoded_size, [osp.join(folder, n) for n in names]))
    return 10 * sum(sizes) + HEADROOM


def _check_output(out: str, overwrite: bool) -> None:
    """Refuse a bad output path before any image is read (nothing is removed here)."""
    if not out.endswith('.lmdb'):
        raise MakeLmdbError(f"the output path must end with '.lmdb' (basicsr's convention), got '{out}'.")
    if osp.lexists(out):
        if not overwrite:
            raise MakeLmdbError(f"'{out}' already exists; pass --overwrite to replace it, or choose another path.")
        if osp.isdir(out) and not osp.islink(out):
            entries = set(os.listdir(out))
            if entries - {'data.mdb', 'lock.mdb', 'meta_info.txt'}:
                raise MakeLmdbError(f"'{out}' is not an LMDB made by this tool (other files inside); not replacing it.")
    try:
        check_writable_folder(osp.dirname(osp.abspath(out)), 'out', out)
    except UserError as error:
        raise MakeLmdbError(str(error)) from error


def _replace_output(out: str) -> None:
    """Remove a previous output (checked by :func:`_check_output`) and create the output's parent folder."""
    if osp.isdir(out) and not osp.islink(out):
        shutil.rmtree(out)
    elif osp.lexists(out):
        os.remove(out)
    os.makedirs(osp.dirname(osp.abspath(out)), exist_ok=True)


def make_lmdb(folder: str, out: str, n_thread: int = 2, compress_level: int = 1, overwrite: bool = False) -> int:
    """Write the LMDB; returns the number of images. Raises :class:`MakeLmdbError` for bad input / output."""
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs

    if not 0 <= compress_level <= 9:
        raise MakeLmdbError(f'--compress-level must be 0..9 (PNG compression), got {compress_level}.')
    if n_thread < 1:
        raise MakeLmdbError(f'--n-thread must be >= 1, got {n_thread}.')
    _check_output(out, overwrite)
    names = image_names(folder)
    map_size = map_size_for(folder, names, n_thread)
    _replace_output(out)
    keys = [osp.splitext(n)[0] for n in names]
    try:
        make_lmdb_from_imgs(
            folder, out, names, keys, compress_level=compress_level, multiprocessing_read=n_thread > 1,
            n_thread=n_thread, map_size=map_size,
        )  # fmt: skip
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # no half-written LMDB left behind
        raise
    return len(names)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0].strip('`'))
    parser.add_argument('folder', help='folder of images (not recursive)')
    parser.add_argument('out', help="output LMDB folder, ending in '.lmdb'")
    parser.add_argument('--n-thread', type=int, default=2, help='reader processes (1: read sequentially)')
    parser.add_argument('--compress-level', type=int, default=1, help='PNG compression level 0..9 (lossless)')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing output LMDB')
    args = parser.parse_args(argv)
    try:
        count = make_lmdb(args.folder, args.out, args.n_thread, args.compress_level, args.overwrite)
    except MakeLmdbError as error:
        sys.exit(f'make_lmdb: {error}')
    print(f'make_lmdb: wrote {count} images from {args.folder} to {args.out} (keys: file names without extension).')


if __name__ == '__main__':
    main()
