"""semcodec: a semantic video codec (the LanDiff tokenizer) and its token streams.

The public API::

    import semcodec
    codec = semcodec.Codec.from_pretrained("s128")       # a shipped model, a file or a folder
    stream = codec.encode(frames, fps)                    # T x H x W x 3 uint8 -> TokenStream
    data = stream.to_bytes()                              # the bytes of tokens.bin
    frames = codec.decode(semcodec.TokenStream.from_bytes(data))

``SemcodecError`` is the base of every error raised for bad input; ``get_preset`` /
``list_presets`` name the model configurations (``CodecConfig``). Data flow: video -> features
(``semcodec.features``) -> tokens (``semcodec.model``) -> bitstream (``semcodec.bitstream``) and
back; ``semcodec.codec`` runs it group by group.

Names are imported on first use (PEP 562), so ``import semcodec`` (and ``semcodec --help``)
does not load torch.
"""
from __future__ import annotations

import importlib

from .errors import ConfigError, SemcodecError

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "Codec": ".codec", "TokenStream": ".stream", "ModelIdentity": ".checkpoint", "read_video": ".video",
    "write_video": ".video", "CodecConfig": ".presets", "get_preset": ".presets", "list_presets": ".presets",
    # building blocks, importable for training and experiments (not part of the small API above)
    "Checkpoint": ".checkpoint", "load_checkpoint": ".checkpoint", "save_checkpoint": ".checkpoint",
    "Group": ".gop", "GopPlan": ".gop", "plan_groups": ".gop", "CosineQuantizer": ".model",
    "SemanticTokenizer": ".model", "VideoTokenizer": ".model.video_tokenizer",
}

__all__ = ["Codec", "TokenStream", "ModelIdentity", "SemcodecError", "ConfigError", "CodecConfig", "get_preset",
           "list_presets", "read_video", "write_video", "__version__"]


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value          # later lookups skip this function
        return value
    raise AttributeError(f"module 'semcodec' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
