"""The engine that runs a CLIP text tower for PromptTask: the tower's blocks (tower.py), its
linear layers' precision (precision.py), the encoders that lay out prompts (encoders.py), and
the backends, torch or an ONNX export on onnxruntime (backend.py, the one place that picks)."""

from sharpzo_ext.clip.engine.backend import Engine

__all__ = ["Engine"]
