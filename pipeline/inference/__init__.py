"""Inference behind one interface: Ultralytics-exact letterbox and NMS (NumPy), PyTorch / ONNX Runtime /
TensorRT backends, parity-proven backend choice per pass, and a bounded frame prefetch."""
from pipeline.inference.backends import (ONNXRUNTIME, TENSORRT, TORCH, BackendUnavailable, OnnxRuntimeBackend,
                                         TensorRTBackend, TorchBackend)
from pipeline.inference.choose import BACKENDS, CHOICES, Detector, open_detector

__all__ = ["BACKENDS", "CHOICES", "ONNXRUNTIME", "TENSORRT", "TORCH", "BackendUnavailable", "Detector",
           "OnnxRuntimeBackend", "TensorRTBackend", "TorchBackend", "open_detector"]
