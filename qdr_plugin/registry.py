"""Idempotent registration into basicsr's registries.

basicsr's ``Registry.register`` asserts that a name is new. A plugin module can legitimately be executed twice
(``importlib.reload``, a test that clears ``sys.modules``, the same file reached under two package names), so
:func:`register` skips a name that is already bound to a class of the same module and qualified name, and still
refuses a *different* object under a taken name (that is a real clash with another plugin).
"""

from collections.abc import Callable
from typing import TypeVar

T = TypeVar('T')


def _same_definition(a: object, b: object) -> bool:
    return (getattr(a, '__module__', None), getattr(a, '__qualname__', None)) == (
        getattr(b, '__module__', None),
        getattr(b, '__qualname__', None),
    )


def register(registry) -> Callable[[T], T]:
    """Decorator: put the class or function into ``registry`` under its ``__name__``, once."""

    def deco(obj: T) -> T:
        name = obj.__name__
        existing = registry._obj_map.get(name)
        if existing is None:
            registry.register(obj)
        elif _same_definition(existing, obj):
            registry._obj_map[name] = obj  # a re-executed module: keep the newest definition
        else:
            raise KeyError(
                f"{registry._name} registry already holds a different '{name}' "
                f'({existing.__module__}.{existing.__qualname__}); rename one of them.'
            )
        return obj

    return deco
