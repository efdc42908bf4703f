"""``python -m qdr_plugin`` is the ``basicsr`` command."""

from qdr_plugin.cli import main

if __name__ == '__main__':
    main()
