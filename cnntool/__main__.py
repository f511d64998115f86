"""`python -m cnntool` runs the command line."""

from cnntool.cli.main import main

main()
