"""``python -m compressor`` (also what ``torchrun -m compressor`` runs)."""

from compressor.cli import main

main()
