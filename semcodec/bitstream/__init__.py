"""Token streams: the ``tokens.bin`` container and the entropy coding of token ids.

Specified in ``docs/bitstream.md``. Modules: ``errors`` (BitstreamError), ``header`` (the
stream header and its validation), ``binary`` (format 2's varints, header body and index
entries), ``entropy`` (integer probability rule, fixed / prior / adaptive coding of one group's
tokens), ``context`` (the learned context model and its coder), ``container`` (file layout,
streaming writer, random access reader). ``context_train`` trains context models (torch).
"""
from .container import FORMAT_VERSION, MAGIC, GroupRecord, StreamReader, StreamWriter, read_header, read_version
from .entropy import ENTROPY_MODES, fixed_bits, prior_digest, quantize_counts, quantize_prior
from .errors import BitstreamError
from .header import StreamHeader, count_groups

__all__ = ["BitstreamError", "ENTROPY_MODES", "FORMAT_VERSION", "GroupRecord", "MAGIC", "StreamHeader",
           "StreamReader", "StreamWriter", "count_groups", "fixed_bits", "prior_digest",
           "quantize_counts", "quantize_prior", "read_header", "read_version"]
