"""Controlled edits of an exported ONNX model, for tests that must see a parity gate fail."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper


def shift_output_bias(source: Path, target: Path, delta: float, index: int = 0) -> Path:
    """Copy an ONNX model, adding ``delta`` to one element of the bias of the node that writes
    the graph's output (the classifier): that logit moves by exactly ``delta`` for every image,
    whatever the weights before it (a perturbation deep in a network can be absorbed by a ReLU).
    """
    model = onnx.load(str(source))
    out = model.graph.output[0].name
    inits = {t.name: t for t in model.graph.initializer}
    node = next(n for n in model.graph.node if out in n.output)
    bias = next(inits[i] for i in node.input if i in inits and len(inits[i].dims) == 1)
    values = numpy_helper.to_array(bias).copy()
    values.flat[index] += np.float32(delta)
    bias.CopyFrom(numpy_helper.from_array(values, bias.name))
    onnx.save(model, str(target))
    return target
