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
])
def test_layer_does_not_import(layer: str, forbidden: tuple[str, ...]) -> None:
    imports = _imports(PACKAGE / layer)
    assert imports, f'no source found under qdr_plugin/{layer}'
    offending = {file: sorted(n for n in names if any(n == f or n.startswith(f'{f}.') for f in forbidden))
                 for file, names in imports.items()}
    assert not {file: names for file, names in offending.items() if names}
