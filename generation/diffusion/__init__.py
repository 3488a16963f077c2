"""The renderer: a video diffusion model that turns tokens into frames (DESIGN.md §5, issue 13).

A video DiT backbone (:mod:`.dit`), text-conditioned, plus a ControlNet-style branch driven by the
semantic tokenizer's decoder features (:mod:`.control`), sampled with diffusers' CogVideoX
schedulers (:mod:`.schedule`, :mod:`.sample`) in a lossless pixel latent (:mod:`.latent`); trained
in two stages on (video, tokens) pairs (:mod:`.data`, :mod:`.train`); plugged into ``semcodec
decode --renderer diffusion`` (:mod:`.render`). :mod:`.cogvideox` builds the same structure on the
paper's backbone (diffusers' CogVideoX-2B) from the user's own weights. See docs/renderer.md.
"""
from .checkpoint import load_renderer_checkpoint, save_renderer
from .config import PRESETS, RendererConfig, get_preset
from .control import ControlBranch, RendererModel, SemanticUpsampler
from .dit import VideoDiT

__all__ = ["PRESETS", "ControlBranch", "RendererConfig", "RendererModel", "SemanticUpsampler", "VideoDiT",
           "get_preset", "load_renderer_checkpoint", "save_renderer"]
