"""Folder-or-LMDB image reading shared by the plugin's datasets.

:class:`ImageSource` lists the images of one folder (not recursive) or of one BasicSR LMDB (``meta_info.txt`` inside,
as ``tools/make_lmdb.py`` and ``basicsr.utils.lmdb_util.make_lmdb_from_imgs`` write it) in name order, and reads
them through basicsr's ``FileClient``. Building an :class:`ImageSource` is the rule of the ``dataroot_*``,
``io_backend`` and ``meta_info_file`` options: a problem there raises
:class:`~qdr_plugin.option_rules.OptionsError` naming the key; a file that cannot be read raises a
:class:`~qdr_plugin.errors.UserError` (a ``ValueError``) that names the file. For the pre-flight check, an
:class:`ImageSource` also tells image sizes from the file headers (:meth:`ImageSource.size`,
:meth:`ImageSource.smallest`) and decodes every image once (:meth:`ImageSource.check_decodable`).
"""

import os
import re
from collections.abc import Mapping
from os import path as osp
from typing import Any

import cv2
import numpy as np
from basicsr.utils import FileClient
from PIL import Image

from qdr_plugin.errors import UserError
from qdr_plugin.option_rules import OptionsError, OptionsPathError, check_keys, looked_in, resolve

__all__ = ['IMG_EXTENSIONS', 'LMDB_OPEN_KEYS', 'ImageSource', 'decode_image', 'header_size']

IMG_EXTENSIONS = ('.bmp', '.jpeg', '.jpg', '.png', '.tif', '.tiff')
"""File name endings (compared case-insensitively) that count as images in an image folder."""

LMDB_OPEN_KEYS = ('readonly', 'lock', 'readahead', 'map_size', 'max_readers', 'max_dbs', 'max_spare_txns', 'meminit')
"""``io_backend`` keys of an LMDB besides ``type``: ``lmdb.open`` options."""

_LMDB_FILES = ('data.mdb', 'meta_info.txt')
_MAKE_LMDB = 'basicsr.utils.lmdb_util.make_lmdb_from_imgs (tools/make_lmdb.py)'
_INT_SCALE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}
_CLIENT_KEY = 'img'
_LMDB_SHAPE = re.compile(r'\((\d+),\s*(\d+)')
_EXIF_ORIENTATION = 0x0112
_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap height and width
_EXIF_FORMATS = ('JPEG', 'MPO', 'TIFF')  # whose orientation tag is in the header (PIL decodes a PNG to find one)


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
        UserError: The bytes are not a decodable image, or not 8-/16-bit integer pixels.
    """
    buf = np.frombuffer(content or b'', np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR) if buf.size else None
    if img is None:
        raise UserError(
            f"{owner}: cannot decode image '{name}' (empty, truncated or not an image); replace or remove the file."
        )
    if img.dtype not in _INT_SCALE:
        raise UserError(
            f"{owner}: image '{name}' has pixel type {img.dtype}; only 8-bit and 16-bit integer images are "
            'supported, convert it.'
        )
    if channels == 1:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[..., None] if img.ndim == 3 else img[..., None]
    else:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB if img.ndim == 2 else cv2.COLOR_BGR2RGB)
    top = _INT_SCALE[img.dtype]
    return img.astype(np.float32) / top, top


def header_size(file: str, owner: str) -> tuple[int, int]:
    """``(height, width)`` of an image file from its header (PIL reads no pixel data), after its EXIF orientation,
    as :func:`decode_image` returns it. Raises :class:`~qdr_plugin.errors.UserError` naming the file when the
    header cannot be read."""
    try:
        with Image.open(file) as img:
            width, height = img.size
            if img.format in _EXIF_FORMATS and img.getexif().get(_EXIF_ORIENTATION) in _TRANSPOSED:
                width, height = height, width
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise UserError(f"{owner}: cannot read image '{file}' ({type(error).__name__}: {error}); replace or remove "
                        'the file.') from error
    return height, width


class ImageSource:
    """The images of one folder, or of one BasicSR LMDB, in name order (or those a meta-info file lists).

    Building one is the rule of the options that name it: every problem raises
    :class:`~qdr_plugin.option_rules.OptionsError` at ``<owner>.<key>`` (:class:`OptionsPathError`, also a
    ``FileNotFoundError``, for a file or folder that is missing or not what the key needs). It lists the folder
    (or reads the LMDB's ``meta_info.txt`` / the meta-info file), reads no image, and so also serves the pre-flight
    check.

    Args:
        root: The folder (option value of ``key``).
        io_backend: The dataset's ``io_backend`` block: ``{type: disk}`` (default) or ``{type: lmdb, ...}`` with
            LMDB open options (:data:`LMDB_OPEN_KEYS`).
        owner: The key path of the dataset block (the dataset class name when the dataset builds it): it starts
            the key paths of option errors and the messages of read errors.
        key: The option key of ``root`` (``dataroot_gt``, ``dataroot_lq``).
        what: What the folder holds, for messages (e.g. ``'clean images'``).
        meta_info_file: Disk only, optional (basicsr's ``meta_info_file``): a text file whose lines start with an
            image path relative to ``root`` (the first space-separated field; blank lines skipped), read in file
            order instead of listing ``root``; sub-folders allowed, e.g. ``CBSD68/101085.png``.
        base_dir: The directory relative paths start from; ``None``: the working directory.

    Attributes:
        paths: For a folder, the image file paths sorted by name (or in ``meta_info_file`` order); for an LMDB,
            the keys (names without extension) of ``meta_info.txt``, sorted.
    """

    def __init__(self, root: Any, io_backend: Mapping[str, Any] | None, owner: str, key: str = 'dataroot_gt',
                 what: str = 'images', meta_info_file: Any = None, base_dir: str | os.PathLike | None = None) -> None:
        self.owner, self.key = owner, key
        self.backend, self.backend_opt = _io_backend(io_backend, f'{owner}.io_backend')
        if not isinstance(root, (str, os.PathLike)) or not os.fspath(root):
            raise OptionsError(f'{owner}.{key}', f'must be the path of a folder of {what}', root,
                               f'Add {key}: <folder> (relative paths start from the working directory).')
        self.root = resolve(root, base_dir)
        self._shapes: dict[str, tuple[int, int]] = {}  # an LMDB's image sizes, from its meta_info.txt
        if not osp.isdir(self.root):
            raise OptionsPathError(f'{owner}.{key}', f'folder does not exist{looked_in(root, base_dir)}', root,
                                   'Fix the path: relative paths start from the working directory, as in basicsr.')
        if meta_info_file is not None:
            if self.backend == 'lmdb':
                raise OptionsError(f'{owner}.meta_info_file', 'is for image folders (an LMDB lists its images itself)',
                                   meta_info_file, 'Remove meta_info_file, or use io_backend: {type: disk}.')
            self.paths = self._paths_from_meta_info(meta_info_file, base_dir)
        elif self.backend == 'lmdb':
            self.paths = self._paths_from_lmdb(root)
            self.backend_opt.update(db_paths=[self.root], client_keys=[_CLIENT_KEY])
        else:
            self.paths = self._paths_from_folder(root)
        self._client: FileClient | None = None

    def _paths_from_folder(self, root: Any) -> list[str]:
        names = sorted(
            entry.name
            for entry in os.scandir(self.root)
            if entry.is_file() and not entry.name.startswith('.') and entry.name.lower().endswith(IMG_EXTENSIONS)
        )
        if not names:
            hint = ('It looks like an LMDB: set io_backend: {type: lmdb}.'
                    if osp.isfile(osp.join(self.root, 'meta_info.txt'))
                    else f'Put images ({", ".join(IMG_EXTENSIONS)}) in it; sub-folders are not searched.')
            raise OptionsPathError(f'{self.owner}.{self.key}', 'folder holds no images', root, hint)
        return [osp.join(self.root, name) for name in names]

    def _paths_from_meta_info(self, meta_info_file: Any, base_dir: str | os.PathLike | None) -> list[str]:
        key_path = f'{self.owner}.meta_info_file'
        file = resolve(meta_info_file, base_dir) if isinstance(meta_info_file, (str, os.PathLike)) else None
        if file is None or not osp.isfile(file):
            raise OptionsPathError(key_path, f'file does not exist{looked_in(file or "", base_dir)}', meta_info_file,
                                   'Fix the path (relative paths start from the working directory) or remove it to '
                                   f'read every image of {self.key}.')
        with open(file) as fin:
            names = [line.split()[0] for line in fin if line.strip()]
        if not names:
            raise OptionsPathError(key_path, 'lists no images', meta_info_file,
                                   f'Write one image path per line, relative to {self.key}.')
        paths = [osp.join(self.root, name) for name in names]
        missing = next((name for name, path in zip(names, paths) if not osp.isfile(path)), None)
        if missing is not None:
            raise OptionsPathError(key_path, f"lists '{missing}', which is not in {self.key} ({self.root})",
                                   meta_info_file, f'Fix that line or {self.key}: the lines are paths relative to it.')
        return paths

    def _paths_from_lmdb(self, root: Any) -> list[str]:
        missing = [name for name in _LMDB_FILES if not osp.isfile(osp.join(self.root, name))]
        if missing:
            raise OptionsPathError(f'{self.owner}.{self.key}', f'is not a BasicSR LMDB: no {" / ".join(missing)} '
                                   'inside', root, f'Build one with {_MAKE_LMDB}, or use io_backend: {{type: disk}} '
                                   'for an image folder.')
        with open(osp.join(self.root, 'meta_info.txt')) as fin:
            entries = sorted(line.strip().rsplit(' ', 2) for line in fin if line.strip())
        if not entries:
            raise OptionsPathError(f'{self.owner}.{self.key}', 'is an LMDB whose meta_info.txt lists no images', root,
                                   f'Rebuild it with {_MAKE_LMDB}.')
        for name, *rest in entries:
            shape = _LMDB_SHAPE.match(rest[0]) if rest else None
            if shape is not None:
                self._shapes[osp.splitext(name)[0]] = (int(shape.group(1)), int(shape.group(2)))
        return [osp.splitext(name)[0] for name, *_ in entries]

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

    def size(self, path: str) -> tuple[int, int] | None:
        """``(height, width)`` of one image of :attr:`paths` without decoding it: from the file's header, or from
        the LMDB's ``meta_info.txt`` (``None`` when that does not give it)."""
        if self.backend == 'disk':
            return header_size(path, self.owner)
        return self._shapes.get(path)

    def smallest(self) -> tuple[str, int, int] | None:
        """The image whose shorter side is the shortest, as ``(path, height, width)`` (``None`` when no size is
        known)."""
        sizes = [(path, *size) for path in self.paths if (size := self.size(path)) is not None]
        return min(sizes, key=lambda entry: min(entry[1:]), default=None)

    def check_decodable(self, channels: int) -> None:
        """Decode every image once (:meth:`read`): raises :class:`~qdr_plugin.errors.UserError` naming the first
        file that is not a readable 8- / 16-bit image."""
        for path in self.paths:
            self.read(path, channels)


def _io_backend(io_backend: Any, path: str) -> tuple[str, dict[str, Any]]:
    """The rule of a dataset's ``io_backend`` block: ``(type, open options)``; ``~`` is ``{type: disk}``."""
    if io_backend is None:
        return 'disk', {}
    if not isinstance(io_backend, Mapping):
        raise OptionsError(path, 'must be a block', io_backend, 'Write io_backend: {type: disk}.')
    backend = io_backend.get('type', 'disk')
    if backend not in ('disk', 'lmdb'):
        raise OptionsError(f'{path}.type', "must be 'disk' or 'lmdb'", backend,
                           'Write io_backend: {type: disk} (an image folder) or {type: lmdb}.')
    check_keys(io_backend, path, ['type', *(LMDB_OPEN_KEYS if backend == 'lmdb' else ())])
    return backend, {k: v for k, v in io_backend.items() if k != 'type'}
