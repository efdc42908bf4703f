"""Deployment: INT8 ONNX export (ONNX Runtime / TensorRT), its checker, PTQ baseline, inference."""

from .check import CheckReport, check_onnx, onnxruntime_kernel_counts
from .graph_rewrites import widen_narrow_convolutions
from .onnx_export import TARGETS, ExportError, export_onnx

__all__ = ['TARGETS', 'CheckReport', 'ExportError', 'check_onnx', 'export_onnx', 'onnxruntime_kernel_counts',
           'widen_narrow_convolutions']
