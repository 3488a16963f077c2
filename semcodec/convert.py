"""Convert the authors' released tokenizer checkpoint into a semcodec checkpoint.

    semcodec convert ckpts/LanDiff/tokenizer/model.safetensors -o landiff.safetensors
    semcodec encode video.mp4 -o tokens.bin --model landiff.safetensors --backbone theia-base/

The release (repository ``LanDiff/LanDiff``, ``landiff/tokenizer``) stores a TiTok-style
``VideoVQ`` whose key names and layout this module knows (``docs/models.md``, "The release's
tokenizer"):

- ``encoder.patch_embed`` (1x1 conv: feature -> width), ``encoder.IFrame_latent_tokens`` (nI x W),
  ``encoder.PFrame_latent_tokens`` (nP x W), ``encoder.ln_pre`` (LayerNorm over the whole
  sequence), ``encoder.transformer.{i}`` (``ln_1``, ``attn.wq / wk / wv / wo`` without biases,
  ``ln_2``, ``mlp.c_fc``, ``mlp.c_proj``), ``encoder.ln_post``, ``encoder.proj_out`` (W -> W);
- ``quantizer`` (``vector_quantize_pytorch.VectorQuantize``): ``project_in`` (W -> d),
  ``_codebook.embed`` (1 x K x d, Euclidean, EMA-trained; ``initted``, ``cluster_size`` and
  ``embed_avg`` are training state), ``project_out`` (d -> W);
- ``decoder.decoder_embed`` (W -> W), ``decoder.mask_token`` (1 x 1 x W), ``decoder.ln_pre``,
  ``decoder.transformer.{i}``, ``decoder.ln_post``, ``decoder.ffn.0`` / ``ffn.2`` (the head);
- ``mean``, ``std``: feature statistics that the release's inference does not apply
  (``mean_std_path`` is unset), so they are left out; ``feature_extractor.*`` (Theia, when
  present) is the backbone, loaded from its own folder instead.

What changes on the way (the function computed stays the same):

- q, k, v are stacked into one ``qkv`` projection with zero biases, and the rows of q and k are
  permuted within each head: the release rotates interleaved pairs ``(2i, 2i+1)`` (complex
  RoPE), semcodec rotates halves ``(i, i + D/2)``; dot products do not see the permutation;
- ``proj_out`` then ``project_in`` become one linear map (W -> d), and ``project_out`` then
  ``decoder_embed`` another (d -> W): no nonlinearity stands between them;
- the config is the ``landiff`` preset with the sizes read from the tensors, ``quantizer =
  "euclidean"`` and ``backbone_fit = "pad_square"`` (how the release feeds frames to Theia).
"""
from __future__ import annotations

import re
from pathlib import Path

import torch

from .errors import ModelError
from .presets import CodecConfig, get_preset

RELEASE_KEYS = ("encoder.IFrame_latent_tokens", "encoder.transformer.0.attn.wq.weight", "quantizer._codebook.embed",
                "decoder.decoder_embed.weight")


def is_release_state(keys) -> bool:
    """Whether tensor names are those of the release's tokenizer."""
    keys = set(keys)
    return all(k in keys for k in RELEASE_KEYS)


def rope_pairs_to_halves(w: torch.Tensor, heads: int) -> torch.Tensor:
    """Rows of a q or k projection (``heads * D`` outputs, head-major) reordered so that each
    head's interleaved pairs (2i, 2i+1) become halves (i, i + D/2)."""
    D = w.shape[0] // heads
    perm = torch.cat([torch.arange(0, D, 2), torch.arange(1, D, 2)])
    idx = (torch.arange(heads)[:, None] * D + perm[None, :]).reshape(-1)
    return w[idx]


def _fuse(outer_w, outer_b, inner_w, inner_b):
    """``outer(inner(x))`` of two linear maps as one: ``(W_o W_i, W_o b_i + b_o)`` (float64 products)."""
    w = (outer_w.double() @ inner_w.double()).float()
    b = (outer_w.double() @ inner_b.double() + outer_b.double()).float()
    return w, b


def _layers(state: dict, prefix: str) -> int:
    found = {int(m.group(1)) for k in state if (m := re.match(re.escape(prefix) + r"transformer\.(\d+)\.", k))}
    if found != set(range(len(found))):
        raise ModelError(f"the release checkpoint's {prefix}transformer blocks are not numbered 0..n-1")
    return len(found)


def release_config(state: dict[str, torch.Tensor], base: CodecConfig | None = None) -> CodecConfig:
    """The semcodec config of a release checkpoint: ``base`` (default: the ``landiff`` preset)
    with the sizes its tensors hold and the release's architecture choices."""
    base = base or get_preset("landiff")
    width = state["encoder.IFrame_latent_tokens"].shape[1]
    codebook = state["quantizer._codebook.embed"]
    if codebook.dim() != 3 or codebook.shape[0] != 1:
        raise ModelError(f"the release checkpoint's codebook has shape {tuple(codebook.shape)}, not 1 x K x d "
                         f"(one codebook)")
    hidden = state["encoder.transformer.0.mlp.c_fc.weight"].shape[0]
    try:
        return base.replace(
            features="backbone", feature_dim=state["encoder.patch_embed.weight"].shape[1], width=width,
            iframe_tokens=state["encoder.IFrame_latent_tokens"].shape[0],
            pframe_tokens=state["encoder.PFrame_latent_tokens"].shape[0],
            codebook_size=codebook.shape[1], codebook_dim=codebook.shape[2], mlp_ratio=hidden / width,
            enc_layers=_layers(state, "encoder."), dec_layers=_layers(state, "decoder."), quantizer="euclidean",
            query_layout="diagonal", lattice_skip=False, iframe_skip=False, locality_slopes=None, pre_norm=True,
            latent_mask="frame", backbone_fit="pad_square")
    except ValueError as e:
        raise ModelError(f"the release checkpoint does not fit the '{base.name}' preset: {e}") from None


def convert_release_state(state: dict[str, torch.Tensor], config: CodecConfig) -> dict[str, torch.Tensor]:
    """The release's tensors (float32) -> a :class:`~semcodec.model.video_tokenizer.VideoTokenizer`
    state dict for ``config`` (see the module doc for the mapping)."""
    s = {k: v.float() for k, v in state.items() if v.is_floating_point() or k.endswith("initted")}
    H, W = config.heads, config.width
    out: dict[str, torch.Tensor] = {}

    def block(src: str, dst: str) -> None:
        out[f"{dst}.norm1.weight"], out[f"{dst}.norm1.bias"] = s[f"{src}.ln_1.weight"], s[f"{src}.ln_1.bias"]
        out[f"{dst}.norm2.weight"], out[f"{dst}.norm2.bias"] = s[f"{src}.ln_2.weight"], s[f"{src}.ln_2.bias"]
        q = rope_pairs_to_halves(s[f"{src}.attn.wq.weight"], H)
        k = rope_pairs_to_halves(s[f"{src}.attn.wk.weight"], H)
        out[f"{dst}.attn.qkv.weight"] = torch.cat([q, k, s[f"{src}.attn.wv.weight"]])
        qkv_b = [s.get(f"{src}.attn.{n}.bias", torch.zeros(W)) for n in ("wq", "wk", "wv")]
        out[f"{dst}.attn.qkv.bias"] = torch.cat([rope_pairs_to_halves(qkv_b[0], H), rope_pairs_to_halves(qkv_b[1], H),
                                                 qkv_b[2]])
        out[f"{dst}.attn.proj.weight"] = s[f"{src}.attn.wo.weight"]
        out[f"{dst}.attn.proj.bias"] = s.get(f"{src}.attn.wo.bias", torch.zeros(W))
        out[f"{dst}.mlp.0.weight"], out[f"{dst}.mlp.0.bias"] = s[f"{src}.mlp.c_fc.weight"], s[f"{src}.mlp.c_fc.bias"]
        out[f"{dst}.mlp.2.weight"] = s[f"{src}.mlp.c_proj.weight"]
        out[f"{dst}.mlp.2.bias"] = s[f"{src}.mlp.c_proj.bias"]

    enc, dec, q = "tokenizer.encoder", "tokenizer.decoder", "quantizer"
    pe = s["encoder.patch_embed.weight"]
    if pe.dim() != 4 or pe.shape[2:] != (1, 1):
        raise ModelError(f"the release encoder's patch_embed is {tuple(pe.shape)}, not a 1x1 convolution")
    out[f"{enc}.in_proj.weight"], out[f"{enc}.in_proj.bias"] = pe[:, :, 0, 0], s["encoder.patch_embed.bias"]
    out[f"{enc}.iframe_queries"] = s["encoder.IFrame_latent_tokens"]
    out[f"{enc}.pframe_queries"] = s["encoder.PFrame_latent_tokens"]
    out[f"{enc}.norm_in.weight"], out[f"{enc}.norm_in.bias"] = s["encoder.ln_pre.weight"], s["encoder.ln_pre.bias"]
    for i in range(config.enc_layers):
        block(f"encoder.transformer.{i}", f"{enc}.blocks.{i}")
    out[f"{enc}.norm_out.weight"], out[f"{enc}.norm_out.bias"] = s["encoder.ln_post.weight"], s["encoder.ln_post.bias"]
    out[f"{enc}.out_proj.weight"], out[f"{enc}.out_proj.bias"] = _fuse(
        s[f"{q}.project_in.weight"], s[f"{q}.project_in.bias"],
        s["encoder.proj_out.weight"], s["encoder.proj_out.bias"])

    out["tokenizer.quantizer.codebook"] = s[f"{q}._codebook.embed"][0]
    out["tokenizer.quantizer.usage"] = torch.full((config.codebook_size,), 1.0 / config.codebook_size)

    out[f"{dec}.latent_proj.weight"], out[f"{dec}.latent_proj.bias"] = _fuse(
        s["decoder.decoder_embed.weight"], s["decoder.decoder_embed.bias"], s[f"{q}.project_out.weight"],
        s[f"{q}.project_out.bias"])
    out[f"{dec}.mask_token"] = s["decoder.mask_token"].reshape(W)
    out[f"{dec}.norm_in.weight"], out[f"{dec}.norm_in.bias"] = s["decoder.ln_pre.weight"], s["decoder.ln_pre.bias"]
    for i in range(config.dec_layers):
        block(f"decoder.transformer.{i}", f"{dec}.blocks.{i}")
    out[f"{dec}.head.0.weight"], out[f"{dec}.head.0.bias"] = s["decoder.ln_post.weight"], s["decoder.ln_post.bias"]
    out[f"{dec}.head.1.weight"], out[f"{dec}.head.1.bias"] = s["decoder.ffn.0.weight"], s["decoder.ffn.0.bias"]
    out[f"{dec}.head.3.weight"], out[f"{dec}.head.3.bias"] = s["decoder.ffn.2.weight"], s["decoder.ffn.2.bias"]
    return {k: v.contiguous() for k, v in out.items()}


def load_release(path: str | Path, base: CodecConfig | None = None) -> tuple[CodecConfig, dict[str, torch.Tensor]]:
    """``(config, state dict)`` of the release checkpoint at ``path``; ``ModelError`` if it is not one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    if not Path(path).is_file():
        raise ModelError(f"no such checkpoint file: {path}")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ModelError(f"cannot read {path}: {e}") from None
    if not is_release_state(state):
        missing = [k for k in RELEASE_KEYS if k not in state]
        raise ModelError(f"{path} is not the release's tokenizer checkpoint (no tensor {missing[0]})")
    config = release_config(state, base)
    try:
        return config, convert_release_state(state, config)
    except KeyError as e:
        raise ModelError(f"{path} is not a complete release tokenizer checkpoint (no tensor {e.args[0]})") from None


def convert(src: str | Path, dst: str | Path, name: str = "landiff", base: CodecConfig | None = None) -> str:
    """Write the release checkpoint ``src`` as the semcodec checkpoint ``dst`` named ``name``;
    returns its content hash. The model is rebuilt from the written tensors first (so a file that
    loads is the only kind written)."""
    from .checkpoint import build_from_state, save_checkpoint
    config, state = load_release(src, base)
    try:
        model = build_from_state(config, state)
    except (RuntimeError, ValueError) as e:
        raise ModelError(f"the release checkpoint does not fit its config: {str(e).splitlines()[0]}") from None
    return save_checkpoint(model, config, dst, name=name, extra={"converted_from": "LanDiff/LanDiff release tokenizer"})
