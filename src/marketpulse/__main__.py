"""``python -m marketpulse``: the same as the ``marketpulse`` command."""

from marketpulse.cli import main

main()
