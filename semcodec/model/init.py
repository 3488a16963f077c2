"""Parameter initialisation that respects the meta device.

Checkpoints are loaded into a model built on the meta device (``checkpoint.build_from_state``):
no memory is allocated and nothing needs drawing, since the file's tensors replace the
parameters. Random ops on meta tensors are implemented in Python (``torch._refs``) and their first
call imports ``torch._dynamo`` (over a second), so initialisers skip them there.
"""
from __future__ import annotations

import torch


def randn(*shape: int, std: float = 1.0) -> torch.Tensor:
    """``std * torch.randn(*shape)`` on the default device; an uninitialised tensor on meta."""
    t = torch.empty(shape)
    return t if t.is_meta else std * torch.randn(shape)
