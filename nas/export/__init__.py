"""Export of found configs (JSON, ONNX, TorchScript, state_dict) and checkpoints."""
