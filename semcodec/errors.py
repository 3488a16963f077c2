"""The one base of every error semcodec raises for bad input: ``except semcodec.SemcodecError``.

Each error's message is one user-facing line (the CLI prints it after ``error:``). The classes
below it say what was wrong, and each stays a ``ValueError`` where it always was one, so code
written against the older classes keeps working:

- ``semcodec.bitstream.BitstreamError``  a token stream that cannot be read
- ``semcodec.codec.CodecError``          a request the codec cannot honour (a stream of another model, --fps)
- ``semcodec.video.VideoError``          a source that cannot be read as video, an output it cannot write
- :class:`ModelError`                    a model or backbone that cannot be found, loaded or converted
- ``semcodec.data.DatasetError``         a token dataset that cannot be built or read
- ``semcodec.limits.LimitError``         a value outside semcodec's bounds
- :class:`ConfigError`                   a model or training configuration that does not hold
- :class:`OutputError`                   an output path that cannot be written

This module imports nothing, so that catching these errors costs no start-up time.
"""
from __future__ import annotations


class SemcodecError(Exception):
    """Base of all of semcodec's user-facing errors."""


class ConfigError(SemcodecError, ValueError):
    """A model or training configuration that does not hold (an unknown preset, a bad option)."""


class ModelError(SemcodecError, ValueError):
    """A model (or a pretrained backbone) that cannot be found, loaded or converted."""


class OutputError(SemcodecError, ValueError):
    """An output path that cannot be written: its folder is missing, it is a folder, or it is
    the input itself."""
