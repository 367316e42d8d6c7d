"""Exports and runtime backends: ONNX graphs, TensorRT engines, onnxruntime/torch runners."""
