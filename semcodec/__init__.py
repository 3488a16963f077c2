"""semcodec: a semantic video codec (the LanDiff tokenizer) and its token streams.

Data flow: video -> features (``semcodec.features``) -> tokens (``semcodec.model``) ->
bitstream (``semcodec.bitstream``) and back; ``semcodec.codec`` runs it group by group.
"""
from .checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from .gop import Group, plan_groups
from .model import CosineQuantizer, SemanticTokenizer
from .model.video_tokenizer import VideoTokenizer
from .presets import CodecConfig, get_preset, list_presets

__version__ = "0.1.0"

__all__ = ["Checkpoint", "CodecConfig", "CosineQuantizer", "Group", "SemanticTokenizer", "VideoTokenizer", "get_preset",
           "list_presets", "load_checkpoint", "plan_groups", "save_checkpoint", "__version__"]
