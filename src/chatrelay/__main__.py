"""`python -m chatrelay`: the `chatrelay` command (cli/__init__.py)."""

from chatrelay.cli import main

main()
