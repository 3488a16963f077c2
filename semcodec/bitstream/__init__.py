"""Token streams: the ``tokens.bin`` container and the entropy coding of token ids.

Specified in ``docs/bitstream.md``. Modules: ``errors`` (BitstreamError), ``header`` (the
stream header and its validation), ``entropy`` (integer probability rule, fixed / prior /
adaptive coding of one group's tokens), ``container`` (file layout, streaming writer, random
access reader).
"""
from .container import FORMAT_VERSION, MAGIC, GroupRecord, StreamReader, StreamWriter, read_header
from .entropy import ENTROPY_MODES, fixed_bits, prior_digest, quantize_counts, quantize_prior
from .errors import BitstreamError
from .header import StreamHeader, count_groups

__all__ = ["BitstreamError", "ENTROPY_MODES", "FORMAT_VERSION", "GroupRecord", "MAGIC", "StreamHeader",
           "StreamReader", "StreamWriter", "count_groups", "fixed_bits", "prior_digest",
           "quantize_counts", "quantize_prior", "read_header"]
