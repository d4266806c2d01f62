"""``python -m crewbox``: the same as the ``crewbox`` command."""

from crewbox.cli import main

main()
