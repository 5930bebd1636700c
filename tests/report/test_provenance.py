"""The provenance block names the libraries whose behaviour a report's numbers depend on."""

from importlib import metadata

from compressor.report.provenance import versions


def test_versions_name_torch_pruning_by_its_installed_distribution() -> None:
    # derived students depend on torch-pruning; its module reports a stale __version__ (1.6.1
    # says "1.6.0"), so the record must come from the installed distribution's metadata
    recorded = versions()
    assert recorded["torch-pruning"] == metadata.version("torch-pruning")
    assert {"torch", "torchvision", "onnx", "onnxruntime"} <= recorded.keys()
