"""``python -m cli`` is the ``gpudra`` command."""

from cli.main import main

main()
