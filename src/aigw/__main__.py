"""`python -m aigw` is the `aigw` command."""

from aigw.cli.main import main

main()
