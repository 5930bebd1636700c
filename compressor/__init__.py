"""compressor: distil a PyTorch teacher into an ONNX student that fits a CPU latency budget.

The pipeline (see ``compressor.pipeline.runner``) chains small stages, each in its own module:
profile -> teacher -> data -> select -> distill -> export -> verify -> report.
"""

__version__ = "0.1.0"
