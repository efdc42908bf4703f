"""Which package layer may import which: read from the source, so a forbidden import fails here before it matters."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / 'qdr_plugin'


def _imports(folder: Path) -> dict[str, set[str]]:
    """Every module each file of ``folder`` imports, as absolute names (relative imports resolved)."""
    found = {}
    for path in sorted(folder.rglob('*.py')):
        package = '.'.join(path.relative_to(PACKAGE.parent).with_suffix('').parts[:-1])
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package.rsplit('.', node.level - 1)[0] if node.level else ''
                module = '.'.join(filter(None, [base, node.module or '']))
                names.add(module)
                names.update(f'{module}.{alias.name}' for alias in node.names)
        found[str(path.relative_to(PACKAGE.parent))] = names
    return found


@pytest.mark.parametrize(('layer', 'forbidden'), [
    ('models', ('qdr_plugin.train',)),  # the model does not import the training loop
    ('quant', ('basicsr', 'qdr_plugin.archs', 'qdr_plugin.prepare', 'qdr_plugin.models')),  # plain PyTorch
    ('detection', ('basicsr', 'qdr_plugin.bench', 'qdr_plugin.models', 'qdr_plugin.archs')),  # no BasicSR
    # the engine both fronts call: plain PyTorch, no training framework, no front
    ('core', ('basicsr', 'mmengine', 'mmcv', 'qdr_plugin.models', 'qdr_plugin.mm', 'qdr_plugin.train',
              'qdr_plugin.dist', 'qdr_plugin.prepare', 'qdr_plugin.archs', 'qdr_plugin.utils.checkpoint')),
])
def test_layer_does_not_import(layer: str, forbidden: tuple[str, ...]) -> None:
    imports = _imports(PACKAGE / layer)
    assert imports, f'no source found under qdr_plugin/{layer}'
    assert not _offending(imports, forbidden)


def _offending(imports: dict[str, set[str]], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    """The files of ``imports`` that import a ``forbidden`` module (or one below it), with those imports."""
    found = {file: sorted(n for n in names if any(n == f or n.startswith(f'{f}.') for f in forbidden))
             for file, names in imports.items()}
    return {file: names for file, names in found.items() if names}


def test_only_the_mmengine_front_imports_openmmlab() -> None:
    """mmengine and mmcv are an optional extra: the package outside ``qdr_plugin/mm`` never imports them."""
    forbidden = ('mmengine', 'mmcv', 'mmagic', 'qdr_plugin.mm')
    imports = {file: names for file, names in _imports(PACKAGE).items() if not file.startswith('qdr_plugin/mm/')}
    assert not _offending(imports, forbidden)
