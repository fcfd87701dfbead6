"""``python -m pipeline`` runs the taskpulse CLI."""

from pipeline.cli import main

main()
