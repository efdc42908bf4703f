"""The vocabulary of options rules: :class:`OptionsError` and typed key checks, shared by every block's rules.

Each options block has its rules next to the code that reads it (``QuantConfig.check_options``, each dataset's
``check_options``, :func:`qdr_plugin.models.train_options.check_train_options`, ...); constructors and the
pre-flight checker (:mod:`qdr_plugin.options_check`) call the same rules. A rule raises :class:`OptionsError`, one
line naming the key path, the value found there, the problem and the fix:

    options error at datasets.train.sigma: must be a number >= 0 (got '25'). Write sigma: 25 without quotes.

Conventions of the ``need_*`` checks: ``block`` is an options mapping, ``path`` the key path of the block
(``''`` at the top level), ``key`` the key inside it. A key that is absent or ``~`` (``None``) is not given: the
check returns ``default`` (``None`` unless said), or, with ``required=True``, raises. Standard library only, so that
plain-torch code (:mod:`qdr_plugin.quant`) can use it.
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
from collections.abc import Callable, Iterable, Mapping
from numbers import Integral, Real
from os import path as osp
from typing import Any

from qdr_plugin.errors import UserError

__all__ = [
    'MISSING', 'OptionsError', 'OptionsPathError', 'check_against_signature', 'check_keys', 'check_registered',
    'did_you_mean', 'is_int', 'is_number', 'join', 'looked_in', 'lookup', 'need_bool', 'need_choice', 'need_dict',
    'need_int', 'need_number', 'need_range', 'number_fix', 'registered_names', 'resolve', 'signature',
]


class _Missing:
    """Stands for a key that is not in the file; shows as ``(got nothing)``."""

    def __repr__(self) -> str:
        return 'nothing'

    def __bool__(self) -> bool:
        return False


MISSING: Any = _Missing()
"""The value of a key that is not there."""

FLOAT_HINT = 'YAML reads 1e-3 as a string: write 1.0e-3 or !!float 1e-3.'


def _plain(value: Any) -> Any:
    """``OrderedDict`` (basicsr's YAML loader) as ``dict``, so messages show ``{'bits': 8}``."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


class OptionsError(UserError):
    """A mistake in an options file: ``key_path``, the ``value`` found there, the ``problem`` and the ``fix``.

    The message is one line: ``options error at <key_path>: <problem> (got <value!r>). <fix>``.
    """

    def __init__(self, key_path: str, problem: str, value: Any = MISSING, fix: str = '') -> None:
        self.key_path, self.problem, self.value, self.fix = key_path, problem, _plain(value), fix
        message = f'options error at {key_path}: {problem} (got {self.value!r}).'
        if fix:
            message += f' {fix}'
        super().__init__(' '.join(message.split()))  # one line, whatever the value's repr holds

    def at(self, key_path: str) -> OptionsError:
        """The same problem, value and fix, reported at ``key_path``."""
        return type(self)(key_path, self.problem, self.value, self.fix)


class OptionsPathError(OptionsError, FileNotFoundError):
    """An options key names a file or folder that is not there, or not what the key needs (also a
    ``FileNotFoundError``)."""


# ----------------------------------------------------------------------------------------------------- values
def join(path: str, key: Any) -> str:
    """The key path of ``key`` inside the block at ``path``."""
    return f'{path}.{key}' if path else str(key)


def is_int(value: Any) -> bool:
    """An integer (``True`` / ``False`` are not)."""
    return isinstance(value, Integral) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite real number (``True`` / ``False`` are not)."""
    return isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)


def did_you_mean(word: Any, choices: Iterable[Any], cutoff: float = 0.6) -> str:
    """``"Did you mean 'x'? Valid: a, b, x."``: the closest choice (if any is close) and, up to 25, all of them."""
    choices = sorted({str(c) for c in choices})
    close = difflib.get_close_matches(str(word), choices, n=1, cutoff=cutoff)
    listing = f"Valid: {', '.join(choices)}." if len(choices) <= 25 else ''
    return (f"Did you mean '{close[0]}'? {listing}" if close else listing).strip()


def number_fix(value: Any, what: str) -> str:
    """The fix for a value that should be the number in ``what`` (``'lr: 1.0e-3'``), with YAML's string traps."""
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return f'Write {what}.'
        if 'e' in value.lower():
            return f'Write {what}; {FLOAT_HINT}'
        return f'Write {what} without quotes.'
    return f'Write {what}.'


def resolve(value: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> str:
    """The path an options value names: ``~`` expanded, relative paths joined to ``base_dir`` (``None``: left
    relative to the working directory)."""
    value = osp.expanduser(os.fspath(value))
    return value if base_dir is None else osp.join(os.fspath(base_dir), value)


def looked_in(value: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> str:
    """``' (looked in <dir>)'`` for a relative path, ``''`` for an absolute one: for "not found" problems."""
    if osp.isabs(osp.expanduser(os.fspath(value))):
        return ''
    return f' (looked in {os.fspath(base_dir) if base_dir is not None else os.getcwd()})'


# ------------------------------------------------------------------------------------------------ key checks
def _given(block: Mapping, path: str, key: str, required: bool, example: str, fix: str = '') -> Any:
    """The value of ``key``, ``None`` when absent or ``~``; raises when ``required`` and not given."""
    value = block.get(key, MISSING)
    if value is MISSING or value is None:
        if required:
            if value is MISSING:
                raise OptionsError(join(path, key), 'required key is missing', value, fix or f'Add {key}: {example}.')
            raise OptionsError(join(path, key), 'needs a value, not ~', value, fix or f'Write {key}: {example}.')
        return None
    return value


def need_int(block: Mapping, path: str, key: str, minimum: int, *, maximum: int | None = None,
             required: bool = False, example: str = '', default: Any = None) -> Any:
    """``block[key]`` must be an integer ``>= minimum`` (and ``<= maximum``); returns it, or ``default``."""
    example = example or str(minimum)
    value = _given(block, path, key, required, example)
    if value is None:
        return default
    if not is_int(value) or value < minimum or (maximum is not None and value > maximum):
        if maximum is not None:
            bound = f'an integer from {minimum} to {maximum}'
        else:
            bound = 'a positive integer' if minimum == 1 else f'an integer >= {minimum}'
        raise OptionsError(join(path, key), f'must be {bound}', value, number_fix(value, f'{key}: {example}'))
    return value


def need_number(block: Mapping, path: str, key: str, *, minimum: float = 0, above: bool = False,
                maximum: float | None = None, required: bool = False, example: str = '1.0',
                default: Any = None) -> Any:
    """``block[key]`` must be a finite number ``>= minimum`` (``> minimum`` when ``above``) and ``<= maximum``;
    returns it, or ``default``."""
    value = _given(block, path, key, required, example)
    if value is None:
        return default
    low_ok = is_number(value) and (value > minimum if above else value >= minimum)
    if not low_ok or (maximum is not None and value > maximum):
        if maximum is None:
            bound = f'{">" if above else ">="} {minimum:g}'
        else:
            bound = f'in {"(" if above else "["}{minimum:g}, {maximum:g}]'
        raise OptionsError(join(path, key), f'must be a number {bound}', value,
                           number_fix(value, f'{key}: {example}'))
    return value


def need_bool(block: Mapping, path: str, key: str, *, required: bool = False, default: Any = None) -> Any:
    """``block[key]`` must be ``true`` or ``false``; returns it, or ``default``."""
    value = _given(block, path, key, required, 'true')
    if value is None:
        return default
    if not isinstance(value, bool):
        raise OptionsError(join(path, key), 'must be true or false', value,
                           f'Write {key}: true or {key}: false (unquoted).')
    return value


def need_choice(block: Mapping, path: str, key: str, choices: Iterable[Any], *, required: bool = False,
                default: Any = None, fix: str = '') -> Any:
    """``block[key]`` must be one of ``choices`` (of the same type: ``true`` is not ``1``); returns it, or
    ``default``. ``fix`` replaces the "did you mean" hint."""
    choices = tuple(choices)
    value = _given(block, path, key, required, str(choices[0]), fix)
    if value is None:
        return default
    if not any(value == c and type(value) is type(c) for c in choices):
        raise OptionsError(join(path, key), f'must be one of {", ".join(map(str, choices))}', value,
                           fix or did_you_mean(value, choices))
    return value


def need_dict(block: Mapping, path: str, key: str, *, required: bool = False, example: str = '') -> dict | None:
    """``block[key]`` must be a block of ``key: value`` pairs; returns it as a ``dict``, or ``None`` if not given."""
    value = block.get(key, MISSING)
    hint = f' ({example})' if example else ''
    if value is MISSING or value is None:
        if required:
            raise OptionsError(join(path, key), 'required block is missing', value, f'Add a {key}: block{hint}.')
        return None
    if not isinstance(value, Mapping):
        raise OptionsError(join(path, key), 'must be a block of key: value pairs', value,
                           f'Write {key}: as a mapping{hint}.')
    return dict(value)


def check_keys(block: Mapping, path: str, valid: Iterable[str]) -> None:
    """Every key of ``block`` must be in ``valid`` (an unknown one gets the closest valid key)."""
    valid = list(valid)
    for key, value in block.items():
        if key not in valid:
            raise OptionsError(join(path, key), f'unknown key {key!r}', value, did_you_mean(key, valid) or 'Remove it.')


# --------------------------------------------------------------------------------------- registries, signatures
def registered_names(registry: Iterable) -> list[str]:
    """The names in a basicsr registry, without the ``_basicsr`` suffix of basicsr's copies of plugin classes."""
    return [name.removesuffix('_basicsr') for name, _ in registry]


def lookup(registry: Iterable, name: Any) -> Any:
    """``registry.get`` without its print: ``None`` when unknown; also finds ``name_basicsr``."""
    objects = dict(iter(registry))
    return objects.get(name, objects.get(f'{name}_basicsr')) if isinstance(name, str) else None


def check_registered(block: Mapping, path: str, registry: Iterable, what: str) -> Any:
    """``block['type']`` must name an entry of the basicsr ``registry`` (``what``: 'arch', 'loss', ...); returns it."""
    value = block.get('type', MISSING)
    names = registered_names(registry)
    if value is MISSING or value is None:
        raise OptionsError(join(path, 'type'), f'required key is missing: the {what} name', value,
                           f'Add type: <{what}>. {did_you_mean("", names)}')
    obj = lookup(registry, value)
    if obj is None:
        raise OptionsError(join(path, 'type'), f'no {what} of this name is registered', value,
                           did_you_mean(value, names) + ' (Plugins register on import: import them first.)')
    return obj


def signature(obj: Callable) -> inspect.Signature | None:
    """``inspect.signature(obj)``, ``None`` when it has none."""
    try:
        return inspect.signature(obj)
    except (TypeError, ValueError):
        return None


def check_against_signature(block: Mapping, path: str, obj: Callable, given_by_caller: Iterable[str] = (),
                            ours: Iterable[str] = ()) -> None:
    """The keys of ``block`` (minus ``type`` and ``ours``) must be parameters of ``obj`` (minus
    ``given_by_caller``), its required parameters present, and a string where the default is a number or a bool is
    refused (YAML's ``1e-3`` trap)."""
    sig = signature(obj)
    if sig is None:
        return
    given_by_caller, ours = set(given_by_caller), set(ours)
    params = {n: p for n, p in sig.parameters.items() if n not in given_by_caller and n != 'self'}
    named = {n: p for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    var_kw = any(p.kind == p.VAR_KEYWORD for p in params.values())
    name = getattr(obj, '__name__', str(obj))
    for key, value in block.items():
        if key == 'type' or key in ours:
            continue
        if key not in named:
            if var_kw:
                continue
            raise OptionsError(join(path, key), f'unknown key {key!r}', value,
                               did_you_mean(key, ['type', *named, *ours]) + f' ({name} takes no such argument.)')
        default = named[key].default
        if isinstance(value, str) and isinstance(default, (bool, int, float)):
            is_flag = isinstance(default, bool)
            raise OptionsError(join(path, key), f'must be {"true or false" if is_flag else "a number"}, not a string',
                               value, f'Write {key}: true or false (unquoted).' if is_flag
                               else number_fix(value, f'{key}: {default!r}'))
    for key, param in named.items():
        if param.default is inspect.Parameter.empty and key not in block:
            raise OptionsError(join(path, key), f'required argument of {name} is missing', MISSING,
                               f'Add {key}: <value>.')


def need_range(block: Mapping, path: str, key: str, default: tuple[float, float], *, minimum: float = 0,
               maximum: float | None = None, example: str = '[0.5, 1.0]') -> tuple[float, float]:
    """``block[key]`` must be ``[lo, hi]`` with ``minimum <= lo <= hi`` (``<= maximum``); returns it as floats, or
    ``default`` when the key is absent."""
    value = block.get(key)
    if value is None:
        return float(default[0]), float(default[1])
    ok = (isinstance(value, (list, tuple)) and len(value) == 2 and all(map(is_number, value))
          and minimum <= value[0] <= value[1] and (maximum is None or value[1] <= maximum))
    if not ok:
        bound = f'{minimum:g} <= lo <= hi' + ('' if maximum is None else f' <= {maximum:g}')
        raise OptionsError(join(path, key), f'must be [lo, hi] with {bound}', value,
                           f'Write e.g. {key}: {example}, or remove it for the default {list(default)}.')
    return float(value[0]), float(value[1])
