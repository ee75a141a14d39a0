"""``python -m prelabel`` runs the command-line interface."""

from prelabel.cli import main

main()
