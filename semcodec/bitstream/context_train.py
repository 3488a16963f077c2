"""Training the ``context`` entropy model (``semcodec.bitstream.context``) on token streams.

    python -m semcodec.bitstream.context_train extract --data /usr/share/backgrounds ... \\
        --groups 1500 --minutes 9 -o runs/ctx/tokens.npz
    python -m semcodec.bitstream.context_train train runs/ctx/tokens.npz --minutes 15 \\
        -o semcodec/weights/s128.context.safetensors
    python -m semcodec.bitstream.context_train rebind OLD.context.safetensors --source OLD.safetensors \\
        --model NEW.safetensors -o NEW.context.safetensors

``extract`` tokenizes random clips of the training sources (photos seen by a moving camera,
procedural scenes: ``semcodec.data.sources``) with the codec the way ``semcodec encode`` does
(source size -> model geometry -> one group of ``group`` frames) and keeps each group's token
ids and lattice. ``train`` fits the float network of ``context.ContextNet`` to them, then rounds
it to the integer network that coding uses, and writes it. Both use one torch thread. ``rebind``
hands a context model on to a model that makes the same tokens as the one it was trained for (one
trained from it with ``semcodec train --decoder-only``), after checking that it does.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


# --------------------------------------------------------------------------------------------
# token extraction
# --------------------------------------------------------------------------------------------

def extract(data: list[str], groups: int, minutes: float, out: str, model: str | None = None,
            seed: int = 0, fps_choices=(2.0, 4.0, 4.0, 8.0)) -> int:
    """Tokenize up to ``groups`` groups (or what ``minutes`` of CPU time allow, photo loading
    included) of random clips of ``data``, mostly as runs of two consecutive groups of one clip
    (the second one sees the overlap of the first, as in a stream); returns the number of groups
    written to ``out`` (npz: ``tokens`` int16 concatenated, ``offsets``, ``grid`` (rows x cols of
    the feature grid), ``valid`` frames, ``prev`` (index of the group before it in the same clip,
    or -1), ``source`` per group)."""
    import torch
    from ..codec import Codec
    from ..data.sources import make_sources
    from ..gop import plan_groups
    from ..video import to_model
    torch.set_num_threads(1)
    t0 = time.process_time()
    codec = Codec.load(model, "cpu")
    c = codec.config
    rng = np.random.default_rng(seed)
    sources = make_sources(data, c.fps)
    toks, grids, valid, prev, src = [], [], [], [], []
    stride = c.group - c.overlap
    while len(toks) < groups and time.process_time() - t0 < 60 * minutes:
        s = int(rng.integers(len(sources)))
        width = int(rng.integers(c.short_side, c.max_long_side + 24))
        geo = codec.geometry(c.short_side, width)
        fps = float(rng.choice(fps_choices))
        if rng.random() < 0.8:          # two groups of a clip, the second one sometimes short
            n = stride + (c.group if rng.random() < 0.8 else int(rng.integers(c.overlap + 1, c.group + 1)))
        else:                           # one group, sometimes short (a clip shorter than a group)
            n = c.group if rng.random() < 0.8 else int(rng.integers(1, c.group + 1))
        # a slower camera: a pan of `span` frames of which the clip sees `n` consecutive ones
        span = n * int(rng.choice([1, 2, 4, 8]))
        frames = sources[s].sample(rng, span, (c.short_side, width), fps)
        first = int(rng.integers(0, span - n + 1))
        clip = to_model(frames[first:first + n], geo)
        before = -1
        for g in plan_groups(n, c.group, c.overlap):
            toks.append(codec.encode_group(clip[g.start:g.stop]).astype(np.int16))
            grids.append((geo.padded[0] // c.patch, geo.padded[1] // c.patch))
            valid.append(g.valid)
            prev.append(before)
            src.append(s)
            before = len(toks) - 1
        if len(toks) // 100 != (len(toks) - 2) // 100:
            print(f"{len(toks)} groups, {time.process_time() - t0:.0f} CPU s", file=sys.stderr)
    np.savez(out, tokens=np.concatenate(toks), offsets=np.cumsum([0] + [len(t) for t in toks]),
             grid=np.array(grids, dtype=np.int32), valid=np.array(valid, dtype=np.int32),
             prev=np.array(prev, dtype=np.int32), source=np.array(src, dtype=np.int32),
             model_hash=np.array(codec.content_hash))
    return len(toks)


# --------------------------------------------------------------------------------------------
# features
# --------------------------------------------------------------------------------------------

def load_tokens(path: str) -> dict:
    z = np.load(path)
    return {k: z[k] for k in z.files}


def group_tokens(data: dict, i: int) -> np.ndarray:
    return data["tokens"][data["offsets"][i]:data["offsets"][i + 1]].astype(np.int64)


def features(data: dict, groups, config, link: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every token of ``groups`` with its context, exactly as the coder sees it: ``(ids N x 28
    int16, features N x 17 uint8, targets N int16)``. ``config``: the codec config (token counts,
    GOP, patch); ``link``: give groups whose clip has a group before them that group's frames."""
    from ..model.masks import lattice_shape
    from .context import GroupLayout
    ids, flags, targets = [], [], []
    for i in groups:
        grid = tuple(int(v) for v in data["grid"][i])
        lay = GroupLayout.for_stream(lattice_shape(config.iframe_tokens, grid)[0],
                                     lattice_shape(config.pframe_tokens, grid)[0], config.iframe_tokens,
                                     config.pframe_tokens, config.group, config.overlap)
        valid = int(data["valid"][i])
        frames = lay.split(group_tokens(data, i), valid)
        j = int(data["prev"][i])
        prev = lay.split(group_tokens(data, j), int(data["valid"][j])) if link and j >= 0 else None
        for f, rr, cc in lay.order(valid):
            a, b = lay.taps(frames, f, rr, cc, prev)
            ids.append(a.astype(np.int16))
            flags.append(b.astype(np.uint8))
            targets.append(frames[f][rr, cc].astype(np.int16))
    return np.concatenate(ids), np.concatenate(flags), np.concatenate(targets)


# --------------------------------------------------------------------------------------------
# the float network and its rounding to integers
# --------------------------------------------------------------------------------------------

LUT_TOP = 1 << 18           # the lookup table's best count; every token keeps at least 1 of it


def float_net(codebook8: np.ndarray, hidden=(256, 256), query=32, bias=None):
    """The float twin of ``context.ContextModel`` (same inputs, same layers): a torch module
    ``(ids n x 28 long, features n x 17) -> logits n x K`` in nats."""
    import torch
    import torch.nn as nn
    from .context import N_FLAGS, N_TAPS

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            K, D = codebook8.shape
            self.register_buffer("E", torch.tensor(codebook8, dtype=torch.float32) / 127)
            self.l1 = nn.Linear(N_TAPS * D + N_TAPS + N_FLAGS, hidden[0])
            self.l2 = nn.Linear(hidden[0], hidden[1])
            self.query = nn.Linear(hidden[1], query)
            self.gate = nn.Linear(hidden[1], N_TAPS)
            g = torch.Generator().manual_seed(0)
            self.out = nn.Parameter(0.1 * torch.randn(K, query, generator=g))
            self.bias = nn.Parameter(torch.zeros(K) if bias is None else torch.as_tensor(bias, dtype=torch.float32))

        def hidden(self, ids, flags):
            avail = ids >= 0
            tok = ids.clamp(min=0)
            x = torch.cat([(self.E[tok] * avail[..., None]).flatten(1), avail.float(), flags.float() / 127], 1)
            h1 = torch.relu(self.l1(x))
            return x, h1, torch.relu(self.l2(h1))

        def forward(self, ids, flags):
            avail = ids >= 0
            _, _, h = self.hidden(ids, flags)
            z = self.query(h) @ self.out.T + self.bias
            return z.scatter_add(1, ids.clamp(min=0), self.gate(h) * avail)

    return Net()


def nll(z, target):
    """Cross-entropy in nats. (A softmax clamped at the lookup table's floor, the integer model's
    exact twin, lets logits below the floor drift without a gradient: training diverged with it.)"""
    import torch
    return torch.nn.functional.cross_entropy(z, target.long())


def to_integer(net, ids, flags, config: dict, percentile: float = 99.99):
    """Round a trained float net to ``context.ContextModel`` (per-channel int8 weights, uint8 /
    int8 activations whose scales come from ``ids``/``flags``, a calibration batch)."""
    import torch
    from .context import LOGIT_FRAC, REQUANT_SHIFT, ContextModel
    with torch.no_grad():
        x, h1, h2 = net.hidden(torch.as_tensor(ids, dtype=torch.long), torch.as_tensor(flags))
        q = net.query(h2)
        s_x = 1 / 127
        s_h1 = float(np.percentile(h1.numpy(), percentile)) / 255 or 1.0
        s_h2 = float(np.percentile(h2.numpy(), percentile)) / 255 or 1.0
        s_q = float(np.percentile(q.abs().numpy(), percentile)) / 127 or 1.0

        def layer(lin, s_in, s_out=None, frac=REQUANT_SHIFT):
            w = lin.weight.double().numpy()
            sw = np.maximum(np.abs(w).max(axis=1), 1e-12) / 127
            w8 = np.round(w / sw[:, None]).astype(np.int8)
            b = np.round(lin.bias.double().numpy() / (sw * s_in)).astype(np.int32)
            scale = sw * s_in / (s_out if s_out is not None else 1.0)
            mult = np.round(scale * 2.0 ** frac).astype(np.int64)
            return w8, b, mult.astype(np.int32)

        t = {"codebook": (net.E.numpy() * 127).round().astype(np.int8)}
        for name, lin, s_in, s_out in (("l1", net.l1, s_x, s_h1), ("l2", net.l2, s_h1, s_h2),
                                       ("query", net.query, s_h2, s_q)):
            t[f"{name}.weight"], t[f"{name}.bias"], t[f"{name}.mult"] = layer(lin, s_in, s_out)
        t["gate.weight"], t["gate.bias"], t["gate.mult"] = layer(net.gate, s_h2, None, LOGIT_FRAC)
        u = net.out.double().numpy()
        su = np.maximum(np.abs(u).max(axis=1), 1e-12) / 127
        t["out.weight"] = np.round(u / su[:, None]).astype(np.int8)
        t["out.mult"] = np.round(su * s_q * 2.0 ** LOGIT_FRAC).astype(np.int64)
        t["out.bias"] = np.round(net.bias.double().numpy() * 2.0 ** LOGIT_FRAC).astype(np.int64)
        t["lut"] = lut()
    return ContextModel(t, config)


def lut() -> np.ndarray:
    """``max(1, round(2**18 exp(-i / 32)))`` for ``i < 400``: steps of 1/32 nat down to a count
    of 1 (a token more than 18 ln 2 nats below the best keeps 2**-18 of its count)."""
    return np.maximum(1, np.round(LUT_TOP * np.exp(-np.arange(400) / 32))).astype(np.int32)


def random_model(codebook_size: int, codebook_dim: int, model_hash: str, hidden=(8, 8), query: int = 4,
                 seed: int = 0, patch: int = 16, iframe_passes: int = 4, pframe_passes: int = 2,
                 log_prior: np.ndarray | None = None):
    """A small context model with random integer weights (valid, deterministic in ``seed``): for
    tests and fuzzing. With ``log_prior`` (K natural-log probabilities) its logits are those plus
    small random terms, so it codes tokens of that distribution in fewer bits than fixed-width."""
    from .context import LOGIT_FRAC, N_FLAGS, N_TAPS, ContextModel
    rng = np.random.default_rng(seed)
    K, D, (H1, H2), Q = codebook_size, codebook_dim, hidden, query
    i8 = lambda *shape: rng.integers(-127, 128, shape).astype(np.int8)          # noqa: E731
    mult = lambda n, lo, hi: rng.integers(lo, hi, n).astype(np.int32)           # noqa: E731
    t = {"codebook": i8(K, D),
         "l1.weight": i8(H1, N_TAPS * D + N_TAPS + N_FLAGS), "l1.bias": rng.integers(-5000, 5000, H1).astype(np.int32),
         "l1.mult": mult(H1, 1 << 8, 1 << 12),
         "l2.weight": i8(H2, H1), "l2.bias": rng.integers(-5000, 5000, H2).astype(np.int32),
         "l2.mult": mult(H2, 1 << 14, 1 << 17),
         "query.weight": i8(Q, H2), "query.bias": rng.integers(-500, 500, Q).astype(np.int32),
         "query.mult": mult(Q, 1 << 14, 1 << 17),
         "gate.weight": i8(N_TAPS, H2), "gate.bias": rng.integers(0, 5000, N_TAPS).astype(np.int32),
         "gate.mult": mult(N_TAPS, 1 << 20, 1 << 22),
         "out.weight": i8(K, Q), "out.mult": rng.integers(1 << 16, 1 << 18, K).astype(np.int64),
         "out.bias": rng.integers(-(2 << LOGIT_FRAC), 2 << LOGIT_FRAC, K).astype(np.int64),
         "lut": lut()}
    if log_prior is not None:
        t["out.bias"] = np.round(np.asarray(log_prior, dtype=np.float64) * 2.0 ** LOGIT_FRAC).astype(np.int64)
        t["out.mult"] = rng.integers(1 << 8, 1 << 10, K).astype(np.int64)
        t["gate.mult"] = mult(N_TAPS, 1 << 10, 1 << 12)
    config = {"model_hash": model_hash, "model_name": "random", "patch": patch,
              "iframe_passes": iframe_passes, "pframe_passes": pframe_passes}
    return ContextModel(t, config)


def train(tokens: str, out: str, minutes: float, model: str | None = None, seed: int = 0,
          hidden=(256, 256), query=32, batch: int = 1024, lr: float = 2e-3, val_groups: int = 40) -> dict:
    """Fit the float net to the token streams of ``tokens`` for ``minutes`` of CPU time (feature
    building included), round it to integers, write it to ``out``; returns a report."""
    import torch
    from ..zoo import load_model
    from .context import ContextModel  # noqa: F401
    torch.set_num_threads(1)
    torch.manual_seed(seed)
    t0 = time.process_time()
    ck = load_model(model, "cpu")
    cfg = ck.config
    data = load_tokens(tokens)
    if str(data["model_hash"]) != ck.content_hash:
        raise ValueError(f"{tokens} holds tokens of another model than {cfg.name}")
    n = len(data["valid"])
    rng = np.random.default_rng(seed)
    clips = np.unique(np.where(data["prev"] >= 0, data["prev"], np.arange(n)))    # first group of each clip
    val_first = set(rng.choice(clips, size=min(val_groups, len(clips) // 10), replace=False).tolist())
    is_val = np.array([(int(data["prev"][i]) if data["prev"][i] >= 0 else i) in val_first for i in range(n)])
    tr_ids, tr_flags, tr_y = features(data, np.nonzero(~is_val)[0], cfg)
    va_ids, va_flags, va_y = features(data, np.nonzero(is_val)[0], cfg)
    print(f"{len(tr_y)} training tokens, {len(va_y)} validation tokens, "
          f"features in {time.process_time() - t0:.0f} CPU s", file=sys.stderr)
    cb = ck.model.tokenizer.quantizer.normalized_codebook().detach().double().numpy()
    codebook8 = np.round(cb * 127).astype(np.int8)
    counts = np.bincount(tr_y, minlength=cfg.codebook_size) + 1
    net = float_net(codebook8, hidden, query, bias=np.log(counts / counts.sum()))
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    ids_t, flags_t, y_t = (torch.from_numpy(a) for a in (tr_ids, tr_flags, tr_y))
    budget = 60 * minutes - (time.process_time() - t0) - 30         # leave time for the export
    t_train, step, log = time.process_time(), 0, []
    while True:
        done = (time.process_time() - t_train) / budget
        if done >= 1:
            break
        for g in opt.param_groups:                                   # cosine to 1/20 over the budget
            g["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + np.cos(np.pi * done)))
        idx = torch.randint(0, len(y_t), (batch,))
        loss = nll(net(ids_t[idx].long(), flags_t[idx]), y_t[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        step += 1
        if step % 2000 == 0:
            log.append((step, float(loss.detach()) / np.log(2)))
            print(f"step {step} {log[-1][1]:.3f} bits/token, {time.process_time() - t0:.0f} CPU s", file=sys.stderr)
    net.eval()
    with torch.no_grad():
        total = sum(float(nll(net(torch.from_numpy(va_ids[j:j + 4096]).long(), torch.from_numpy(va_flags[j:j + 4096])),
                                    torch.from_numpy(va_y[j:j + 4096]))) * len(va_y[j:j + 4096])
                  for j in range(0, len(va_y), 4096))
    va_float = total / len(va_y) / np.log(2)
    calib = rng.choice(len(tr_y), size=min(20000, len(tr_y)), replace=False)
    config = {"model_hash": ck.content_hash, "model_name": cfg.name, "patch": cfg.patch,
              "iframe_passes": 4, "pframe_passes": 2,
              "trained_on": f"{n - int(is_val.sum())} groups ({len(tr_y)} tokens) of {Path(tokens).name}",
              "steps": step}
    cm = to_integer(net, tr_ids[calib].astype(np.int64), tr_flags[calib], config)
    va_int = integer_bits(cm, va_ids, va_flags, va_y)
    digest = cm.save(out)
    report = {"steps": step, "train_tokens": int(len(tr_y)), "val_tokens": int(len(va_y)),
              "val_bits_float": va_float, "val_bits_integer": va_int, "hash": digest,
              "cpu_s": time.process_time() - t0}
    print(json.dumps(report), file=sys.stderr)
    return report


def integer_bits(cm, ids, flags, y, chunk: int = 512) -> float:
    """Mean code length (bits/token) of ``y`` under the integer model's probabilities (``chunk``
    slots at a time: each holds K int64 logits and counts)."""
    from .entropy import PRECISION
    total = 0.0
    for s in range(0, len(y), chunk):
        q = cm.probabilities(ids[s:s + chunk].astype(np.int64), flags[s:s + chunk].astype(np.int64))
        total += float(np.sum(PRECISION - np.log2(q[np.arange(len(q)), y[s:s + chunk].astype(np.int64)])))
    return total / len(y)


# --------------------------------------------------------------------------------------------
# a context model for a model with the same tokens
# --------------------------------------------------------------------------------------------

def rebind(context: str, source: str, model: str, out: str) -> str:
    """Write ``context`` (trained on the tokens of model ``source``) as the context model of
    ``model``. Its tokens must be ``source``'s: equal stem, encoder and codebook weights and equal
    config but for decoder fields (``video_tokenizer.token_difference``). Returns the new hash;
    ``ValueError`` with a one-line reason otherwise."""
    from ..model.video_tokenizer import token_difference
    from ..zoo import load_model
    from .context import ContextModel
    cm = ContextModel.load(context)
    old, new = load_model(source, "cpu"), load_model(model, "cpu")
    if cm.model_hash != old.content_hash:
        raise ValueError(f"{context} was not trained on the tokens of {source}")
    why = token_difference(old.model, new.model)
    if why:
        raise ValueError(f"{model} does not make the tokens of {source}: {why}")
    # the streams coded with it before stay decodable: the network is the same (ContextModel.hashes)
    config = dict(cm.config, model_hash=new.content_hash, model_name=new.config.name,
                  rebound_from=[cm.hash, *cm.config.get("rebound_from", [])][:16])
    return ContextModel(cm.tensors, config).save(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m semcodec.bitstream.context_train",
                                description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("extract", help="tokenize random groups of the training sources")
    e.add_argument("--data", nargs="+", required=True)
    e.add_argument("--groups", type=int, default=1500)
    e.add_argument("--minutes", type=float, default=9.0)
    e.add_argument("--model", default=None)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--fps-choices", type=float, nargs="+", default=[2.0, 4.0, 4.0, 8.0],
                   help="semantic frame rates drawn per clip (repeat one to weight it)")
    e.add_argument("-o", "--out", required=True)
    t = sub.add_parser("train", help="fit the context model to extracted token streams")
    t.add_argument("tokens")
    t.add_argument("--minutes", type=float, default=15.0, help="CPU minutes, features and export included")
    t.add_argument("--model", default=None)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--hidden", type=int, nargs=2, default=[256, 256], help="widths of the two hidden layers")
    t.add_argument("--query", type=int, default=32, help="width of the query and the code embeddings")
    t.add_argument("-o", "--out", required=True)
    r = sub.add_parser("rebind", help="the context model of a model with the same tokens (decoder-only training)")
    r.add_argument("context", help="the context model file of --source")
    r.add_argument("--source", required=True, help="the model it was trained on")
    r.add_argument("--model", required=True, help="the model that makes the same tokens")
    r.add_argument("-o", "--out", required=True)
    a = p.parse_args(argv)
    try:
        if a.cmd == "extract":
            t0 = time.process_time()
            n = extract(a.data, a.groups, a.minutes, a.out, a.model, a.seed, tuple(a.fps_choices))
            print(f"{n} groups -> {a.out} ({time.process_time() - t0:.0f} CPU s)")
        elif a.cmd == "train":
            train(a.tokens, a.out, a.minutes, a.model, a.seed, tuple(a.hidden), a.query)
        else:
            print(f"{a.out}: context model {rebind(a.context, a.source, a.model, a.out)[:16]} for {a.model}")
    except (ValueError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
