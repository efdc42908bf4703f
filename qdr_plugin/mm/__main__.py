"""``python -m qdr_plugin.mm``: see :mod:`qdr_plugin.mm.cli`."""

from qdr_plugin.mm.cli import main

if __name__ == '__main__':
    main()
