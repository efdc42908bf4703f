"""Deployment: INT8 ONNX export (ONNX Runtime / TensorRT), its checker, PTQ baseline, inference."""

from .check import CheckReport, check_onnx, onnxruntime_kernel_counts
from .onnx_export import TARGETS, ExportError, export_onnx, widen_narrow_convolutions

__all__ = ['TARGETS', 'CheckReport', 'ExportError', 'check_onnx', 'export_onnx', 'onnxruntime_kernel_counts',
           'widen_narrow_convolutions']
