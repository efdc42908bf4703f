"""Folder-or-LMDB image reading shared by the plugin's datasets.

:class:`ImageSource` lists the images of one folder (not recursive) or of one BasicSR LMDB (``meta_info.txt`` inside,
as ``tools/make_lmdb.py`` and ``basicsr.utils.lmdb_util.make_lmdb_from_imgs`` write it) in name order, and reads
them through basicsr's ``FileClient``. Every problem raises one message that starts with the owning dataset's name
and the option key, and says how to fix it.
"""

import os
from collections.abc import Mapping
from os import path as osp
from typing import Any

import cv2
import numpy as np
from basicsr.utils import FileClient

__all__ = ['IMG_EXTENSIONS', 'ImageSource', 'decode_image', 'is_int', 'is_training_phase']

IMG_EXTENSIONS = ('.bmp', '.jpeg', '.jpg', '.png', '.tif', '.tiff')
"""File name endings (compared case-insensitively) that count as images in an image folder."""

_INT_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}


def is_int(value: Any) -> bool:
    """An integer option value (``True`` / ``False`` are not)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def is_training_phase(opt: Mapping[str, Any], owner: str) -> bool:
    """``opt['phase'] == 'train'``; a clear error unless it is one of BasicSR's phases."""
    phase = opt.get('phase')
    if phase not in ('train', 'val', 'test'):
        raise ValueError(
            f"{owner}: phase must be 'train', 'val' or 'test', got {phase!r}; BasicSR sets it from the datasets key "
            '(train / val*), set it yourself when building by hand.'
        )
    return phase == 'train'

_CLIENT_KEY = 'img'


def decode_image(content: bytes | None, name: str, channels: int, owner: str) -> tuple[np.ndarray, float]:
    """Decode image bytes to float32 ``H x W x channels`` in [0, 1], RGB order for colour.

    Decoding uses ``cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR`` (alpha dropped, EXIF orientation applied). 8-bit
    values are divided by 255, 16-bit values by 65535. With ``channels=1`` a colour image is converted with
    ``cv2.COLOR_BGR2GRAY`` on its integer values; with ``channels=3`` a gray image is repeated into 3 channels.

    Args:
        content: The file's bytes (``None`` or empty counts as unreadable).
        name: The file (or LMDB key) named in error messages.
        channels: 1 (gray) or 3 (RGB).
        owner: The dataset class name that starts error messages.

    Returns:
        The image and the integer maximum it was divided by (255.0 or 65535.0).

    Raises:
        ValueError: The bytes are not a decodable image, or not 8-/16-bit integer pixels.
    """
    buf = np.frombuffer(content or b'', np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR) if buf.size else None
    if img is None:
        raise ValueError(
            f"{owner}: cannot decode image '{name}' (empty, truncated or not an image); replace or remove the file."
        )
    if img.dtype not in _INT_SCALE:
        raise ValueError(
            f"{owner}: image '{name}' has pixel type {img.dtype}; only 8-bit and 16-bit integer images are "
            'supported, convert it.'
        )
    if channels == 1:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[..., None] if img.ndim == 3 else img[..., None]
    else:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB if img.ndim == 2 else cv2.COLOR_BGR2RGB)
    top = _INT_SCALE[img.dtype]
    return img.astype(np.float32) / top, top


class ImageSource:
    """The images of one folder, or of one BasicSR LMDB, in name order (or those a meta-info file lists).

    Args:
        root: The folder (option value of ``key``).
        io_backend: The dataset's ``io_backend`` block: ``{type: disk}`` (default) or ``{type: lmdb, ...}`` with
            LMDB open options (``readonly``, ``lock``, ``readahead``, ...).
        owner: The dataset class name that starts error messages.
        key: The option key of ``root`` (``dataroot_gt``, ``dataroot_lq``), named in error messages.
        what: What the folder holds, for messages (e.g. ``'clean images'``).
        meta_info_file: Disk only, optional (basicsr's ``meta_info_file``): a text file whose lines start with an
            image path relative to ``root`` (the first space-separated field; blank lines skipped), read in file
            order instead of listing ``root``; sub-folders allowed, e.g. ``CBSD68/101085.png``.

    Attributes:
        paths: For a folder, the image file paths sorted by name (or in ``meta_info_file`` order); for an LMDB,
            the keys (names without extension) of ``meta_info.txt``, sorted.

    Raises:
        ValueError: ``root`` is not a path, the backend type is not ``disk`` / ``lmdb``, or ``meta_info_file``
            is given with an LMDB.
        FileNotFoundError: The folder does not exist, holds no images, is not a BasicSR LMDB, or a listed image
            is missing.
    """

    def __init__(self, root: Any, io_backend: Mapping[str, Any] | None, owner: str, key: str = 'dataroot_gt',
                 what: str = 'images', meta_info_file: Any = None) -> None:
        self.owner, self.key = owner, key
        self.backend_opt = dict(io_backend or {'type': 'disk'})
        self.backend = self.backend_opt.pop('type', 'disk')
        if self.backend not in ('disk', 'lmdb'):
            raise ValueError(f"{owner}: io_backend type must be 'disk' or 'lmdb', got {self.backend!r}.")
        if not isinstance(root, (str, os.PathLike)) or not str(root):
            raise ValueError(f'{owner}: {key} must be the path of a folder of {what}, got {root!r}.')
        self.root = str(root)
        if not osp.isdir(self.root):
            raise FileNotFoundError(
                f"{owner}: {key} folder '{self.root}' does not exist (or is not a folder); fix the path (relative "
                'paths start from the working directory).'
            )
        if meta_info_file is not None:
            if self.backend == 'lmdb':
                raise ValueError(
                    f'{owner}: meta_info_file is for image folders; an LMDB lists its images in its own '
                    'meta_info.txt: remove meta_info_file or use io_backend: {type: disk}.'
                )
            self.paths = self._paths_from_meta_info(meta_info_file)
        elif self.backend == 'lmdb':
            self.paths = self._paths_from_lmdb()
            self.backend_opt.update(db_paths=[self.root], client_keys=[_CLIENT_KEY])
        else:
            self.paths = self._paths_from_folder()
        self._client: FileClient | None = None

    def _paths_from_folder(self) -> list[str]:
        names = sorted(
            entry.name
            for entry in os.scandir(self.root)
            if entry.is_file() and not entry.name.startswith('.') and entry.name.lower().endswith(IMG_EXTENSIONS)
        )
        if not names:
            hint = (
                ' It looks like an LMDB folder: set io_backend: {type: lmdb}.'
                if osp.isfile(osp.join(self.root, 'meta_info.txt'))
                else ' Sub-folders are not searched.'
            )
            raise FileNotFoundError(
                f"{self.owner}: {self.key} folder '{self.root}' holds no images ({', '.join(IMG_EXTENSIONS)}).{hint}"
            )
        return [osp.join(self.root, name) for name in names]

    def _paths_from_meta_info(self, meta_info_file: Any) -> list[str]:
        if not isinstance(meta_info_file, (str, os.PathLike)) or not osp.isfile(meta_info_file):
            raise FileNotFoundError(
                f"{self.owner}: meta_info_file '{meta_info_file}' is not a file; fix the path (relative paths start "
                'from the working directory) or remove it to read every image of the folder.'
            )
        with open(meta_info_file) as fin:
            names = [line.split()[0] for line in fin if line.strip()]
        if not names:
            raise FileNotFoundError(f"{self.owner}: meta_info_file '{meta_info_file}' lists no images.")
        paths = [osp.join(self.root, name) for name in names]
        for name, path in zip(names, paths):
            if not osp.isfile(path):
                raise FileNotFoundError(
                    f"{self.owner}: image '{path}' (line '{name}' of meta_info_file '{meta_info_file}', relative to "
                    f"{self.key} '{self.root}') does not exist; fix the line or the {self.key} folder."
                )
        return paths

    def _paths_from_lmdb(self) -> list[str]:
        meta = osp.join(self.root, 'meta_info.txt')
        if not osp.isfile(meta):
            raise FileNotFoundError(
                f"{self.owner}: {self.key} '{self.root}' has no meta_info.txt, so it is not a BasicSR LMDB; build one "
                'with basicsr.utils.lmdb_util.make_lmdb_from_imgs, or use io_backend: {type: disk} for an image '
                'folder.'
            )
        with open(meta) as fin:
            names = sorted(line.rsplit(' ', 2)[0] for line in fin if line.strip())
        if not names:
            raise FileNotFoundError(
                f"{self.owner}: {self.key} LMDB '{self.root}' lists no images in meta_info.txt; rebuild it with "
                'basicsr.utils.lmdb_util.make_lmdb_from_imgs.'
            )
        return [osp.splitext(name)[0] for name in names]

    def name(self, path: str) -> str:
        """The image's name without folder and extension (for an LMDB: its key), to pair images across sources."""
        return osp.splitext(osp.basename(path))[0] if self.backend == 'disk' else path

    def describe(self, path: str) -> str:
        """``path`` as error messages show it: the file path, or ``<lmdb folder>:<key>``."""
        return path if self.backend == 'disk' else f'{self.root}:{path}'

    def read(self, path: str, channels: int) -> tuple[np.ndarray, float]:
        """Read one image of :attr:`paths`: float32 ``H x W x channels`` in [0, 1] and its integer maximum
        (see :func:`decode_image`)."""
        if self._client is None:  # opened lazily: LMDB handles must not cross DataLoader worker forks
            self._client = FileClient(self.backend, **self.backend_opt)
        content = self._client.get(path, _CLIENT_KEY)
        if content is None:
            raise FileNotFoundError(
                f"{self.owner}: key '{path}' is listed in meta_info.txt but missing from the LMDB '{self.root}'; "
                'rebuild the LMDB.'
            )
        return decode_image(content, self.describe(path), channels, self.owner)
