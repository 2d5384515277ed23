"""Models that leave nncli: ``nncli export`` (ONNX, one mapping per layer type).

- onnx: ``EXPORTERS`` (layer YAML word -> mapping function), :func:`onnx.export`

The ONNX graph is built from the checkpoint (its weights, normalisation and
label encoding), never from PyTensor's graph, and is checked by onnxruntime
against nncli's own predictions before it is written.
"""

from nncli.export import onnx  # noqa: F401  (registers the layer mappings)
from nncli.export.onnx import EXPORTERS, ExportError, export

__all__ = ["EXPORTERS", "ExportError", "export", "onnx"]
