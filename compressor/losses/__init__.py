"""The training loss: ``L = lambda*CE + (1 - lambda)*warmup*distill``
(:mod:`~compressor.losses.total`), teacher-bias removal as pure functions
(:mod:`~compressor.losses.bias_aware`) and the registry of distillation methods
(:mod:`~compressor.losses.methods`, one module per ``--method``).

May import only :mod:`compressor.config` (the settings it reads).
"""
