"""``python -m compressor`` (also what ``torchrun -m compressor`` runs)."""

from compressor.cli.main import main

if __name__ == "__main__":  # data-loading workers import this module again: do not re-run
    main()
