"""A tiny token dataset for the LM tests: procedural clips (semcodec dataset synth) tokenized by the
`tiny` codec preset (weights jittered so that tokens vary), built once per test session."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

_BUILT: dict[tuple, Path] = {}


def tiny_dataset(tmp_path_factory, n_clips: int = 8, frames: int = 12, seed: int = 0) -> Path:
    """``n_clips`` clips of ``frames`` frames at 8 fps, 32x48 (12 frames: 9 semantic frames, groups of
    4 + 4 + 3 frames with the tiny codec), captioned; cached for the session."""
    key = (n_clips, frames, seed)
    if key not in _BUILT:
        from semcodec.data import synth
        from semcodec.data.build import build
        from test_dataset import tiny_checkpoint as tiny_codec       # jittered tiny preset
        root = tmp_path_factory.mktemp(f"lmds{n_clips}-{frames}-{seed}")
        model = tiny_codec(root / "tiny.safetensors", seed)
        synth.write_clips(n_clips, root / "clips", frames=frames, size=(32, 48), fps=8, seed=seed)
        rep = build([str(root / "clips")], root / "ds", model=model, captions=root / "clips" / "captions.jsonl",
                    workers=0)
        assert rep.built == n_clips and not rep.failed
        _BUILT[key] = root / "ds"
    return _BUILT[key]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """The LM tests run tiny models: one intra-op thread (two only spin-wait on a busy machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def layout_dataset(out, clips: list[list], captions: list[str] | None = None, preset: str = "tiny") -> Path:
    """A token dataset holding given tokens: ``clips[i]`` is the list of group token arrays of clip
    ``i`` (frame counts from their lengths), with the token layout of the codec ``preset`` (no video,
    no codec run: the shard writer of ``semcodec dataset build``)."""
    import numpy as np
    from semcodec.data.build import ShardWriter, prepare_dir
    from semcodec.presets import get_preset

    class Fake:      # what dataset_meta needs of a codec
        config = get_preset(preset)
        name = f"{preset}-layout"
        content_hash = "0" * 64
    c = Fake.config
    meta = prepare_dir(out, Fake)
    w = ShardWriter(out, 0, meta)
    for i, groups in enumerate(clips):
        valid = [1 + (len(g) - c.iframe_tokens) // c.pframe_tokens for g in groups]
        w.add({"clip_id": f"clip_{i:06d}", "source": f"/data/clip_{i:06d}.mp4",
               "caption": captions[i] if captions else f"caption {i}", "meta": "{}", "fps": 8.0,
               "frames": sum(valid), "width": 48, "height": 32, "duration": sum(valid) / c.fps, "motion": 1.0,
               "semantic_fps": c.fps, "semantic_frames": sum(valid), "model": Fake.name,
               "model_hash": Fake.content_hash, "n_groups": len(groups), "n_tokens": sum(len(g) for g in groups),
               "group_start": [0] * len(groups), "group_valid": valid,
               "group_offsets": np.concatenate([[0], np.cumsum([len(g) for g in groups])]).tolist(),
               "tokens": np.concatenate(groups).astype(np.int16)})
    w.flush()
    return Path(out)
