"""Images in: ImageFolder trees as seeded splits, decoded in memory or streamed, the decode cache,
and the eval transform a model was trained with (:mod:`~compressor.data.preprocess`).

May import only :mod:`compressor.errors` and :mod:`compressor.files`.
"""
