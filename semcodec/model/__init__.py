from .masks import AttentionMask, TokenLayout, dense_reference, get_mask, mask_mod_for
from .quantizer import CosineQuantizer, EuclideanQuantizer, make_quantizer
from .tokenizer import Decoder, Encoder, SemanticTokenizer

__all__ = ["AttentionMask", "TokenLayout", "dense_reference", "get_mask", "mask_mod_for",
           "CosineQuantizer", "EuclideanQuantizer", "make_quantizer", "Encoder", "Decoder", "SemanticTokenizer"]
