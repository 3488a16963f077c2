"""``semcodec dataset build --engine ray``: tokenize a collection on a Ray cluster.

The clips (already listed, with those present or failed before left out, by ``build``) become a
Ray Data dataset; ``workers`` actors (``concurrency``), each holding one loaded codec, map a clip
to its shard row (or its failure reason), and the rows stream back to the building process in
clip order (``preserve_order``), where ``build``'s own shard writer and failure log take them. So
the shards are written by the same code as the local engine's, on this machine's file system,
and the exactly-once guarantee is the same: a shard appears whole (atomic rename) or not at all,
a re-run skips the clip ids the shards hold, and Ray's retries of a task that died never reach
the writer twice (a retried task's output replaces the lost one). A source that crashes a worker
every time stops the build once Ray gives up retrying; the shards written so far stay, and
``failures-*.jsonl`` or removing the source lets the re-run finish.

Where the cluster is: ``RAY_ADDRESS`` (Ray's own convention), else an already initialised Ray,
else a local one. Install with ``pip install 'semcodec[ray]'``.
"""
from __future__ import annotations

import dataclasses
import pickle

from .dataset import DatasetError


def ray_available():
    """The ``ray`` module, or a DatasetError saying how to install it."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise DatasetError("--engine ray needs Ray: pip install 'semcodec[ray]'") from None
    return ray


class _Tokenizer:
    """A Ray actor: one codec, loaded once; ``{clip fields}`` -> ``{status, payload}``."""

    def __init__(self, model, device, backbone):
        import torch
        torch.set_num_threads(1)
        from ..codec import Codec
        from .build import token_dtype
        self.codec = Codec.from_pretrained(model, device, backbone)
        self.dtype = token_dtype(self.codec.config.codebook_size)

    def __call__(self, item: dict) -> dict:
        from .build import Clip, _try_clip
        status, _, res = _try_clip(self.codec, Clip(**item), self.dtype)
        # the row (numpy tokens, lists) travels as one pickled value: Arrow needs no schema for it
        return {"clip_id": item["clip_id"], "status": status, "payload": pickle.dumps(res)}


def run_ray(todo, model, device, workers: int, handle, backbone=None) -> None:
    """Tokenize the clips ``todo`` with ``workers`` Ray actors; ``handle(status, clip, row or
    reason)`` is called here, in clip order, for every clip."""
    ray = ray_available()
    if not ray.is_initialized():
        ray.init(log_to_driver=False)
    if not todo:
        return
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True          # rows come back in clip order
    ctx.enable_progress_bars = False
    gpu = str(device or "cpu").startswith("cuda")
    ds = ray.data.from_items([dataclasses.asdict(c) for c in todo], override_num_blocks=min(len(todo), 4 * workers))
    rows = ds.map(_Tokenizer, fn_constructor_kwargs={"model": model, "device": "cuda" if gpu else "cpu",
                                                     "backbone": backbone},
                  concurrency=workers, num_cpus=1, num_gpus=1 if gpu else 0)
    by_id = {c.clip_id: c for c in todo}
    for row in rows.iter_rows():
        handle(row["status"], by_id[row["clip_id"]], pickle.loads(row["payload"]))
