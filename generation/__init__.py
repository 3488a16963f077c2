"""Text-to-video on top of semcodec token streams.

- ``generation.lm``: the language model over token streams (text + micro-conditions, classifier-free
  guidance, KV cache, training: ``python -m generation.lm.train``);
- the diffusion decoder and ``generation.t2v``: later work.
"""
