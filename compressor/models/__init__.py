"""Models: the architecture registry and student ladders (:mod:`~compressor.models.registry`),
checkpoints and code-carrying archives, published weights for students
(:mod:`~compressor.models.pretrained`), and students derived from the teacher by width pruning
(:mod:`~compressor.models.pruning`, :mod:`~compressor.models.widths`).

May import :mod:`compressor.compute` and :mod:`compressor.data`; never latency or training.
"""
