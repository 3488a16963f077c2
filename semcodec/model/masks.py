"""Token layouts and the encoder / decoder attention masks (DESIGN.md §2).

Why masks live here and not in the attention kernel: the rule is a property of the token layout
(which tokens are visual, IFrame or PFrame, and their frame), so it is built next to the layout,
once per shape, and kept by the model that uses it (``tokenizer.LayoutCache``). The attention
entry point (:mod:`kernels.attention`) only consumes it: as a flex-attention ``BlockMask``
(sparse, block-skipping) or as a dense boolean matrix (SDPA).

Encoder sequence ``[T*h*w visual][nI IFrame queries][(T-1)*nP PFrame queries]``:
- a visual token of frame t sees visual tokens of frames <= t and no query token;
- an IFrame query sees frame 0's visual tokens and IFrame queries at or before it;
- a PFrame query of frame k sees visual tokens of frames <= k and every query at or before it.
Decoder sequence ``[T*h*w mask positions][latents in the same order as the queries]``:
- a position of frame k sees positions of frames <= k, every IFrame token and the PFrame tokens of
  frames 1..k;
- latents follow the encoder's rule for queries, with mask positions in place of visual tokens
  (``latent_mask="causal"``), or (``"frame"``, the authors' release) a latent of frame k sees the
  positions of frames <= k and every latent of frames <= k, its own frame's included.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

VISUAL, IFRAME, PFRAME = 0, 1, 2


@dataclass(frozen=True)
class TokenLayout:
    """Shape of one group's token sequence: ``frames`` T, feature ``grid`` (h, w), query counts."""
    frames: int
    grid: tuple[int, int]
    iframe_tokens: int
    pframe_tokens: int

    @property
    def n_visual(self) -> int:
        return self.frames * self.grid[0] * self.grid[1]

    @property
    def n_latent(self) -> int:
        return self.iframe_tokens + (self.frames - 1) * self.pframe_tokens

    @property
    def length(self) -> int:
        return self.n_visual + self.n_latent

    def kinds_and_frames(self, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Per token: kind (VISUAL/IFRAME/PFRAME) and frame index, both ``L`` int32."""
        hw = self.grid[0] * self.grid[1]
        kind = torch.cat([
            torch.full((self.n_visual,), VISUAL, dtype=torch.int32),
            torch.full((self.iframe_tokens,), IFRAME, dtype=torch.int32),
            torch.full(((self.frames - 1) * self.pframe_tokens,), PFRAME, dtype=torch.int32),
        ])
        frame = torch.cat([
            torch.arange(self.n_visual, dtype=torch.int32) // hw,
            torch.zeros(self.iframe_tokens, dtype=torch.int32),
            1 + torch.arange((self.frames - 1) * self.pframe_tokens, dtype=torch.int32) // max(self.pframe_tokens, 1),
        ])
        return kind.to(device), frame.to(device)

    def positions(self, query_layout: str = "diagonal") -> torch.Tensor:
        """RoPE positions ``L x 3`` (t, h, w) of the visual tokens, then of the queries.

        ``"diagonal"`` (the paper's release): query token n sits at (n, n, n).
        ``"grid"``: the queries of a frame are spread over a lattice covering its grid, at that
        frame's time, so that from the first step a query attends most to its own neighbourhood
        (a locality prior that makes small models learn far faster)."""
        t, h, w = torch.meshgrid(torch.arange(self.frames), torch.arange(self.grid[0]),
                                 torch.arange(self.grid[1]), indexing="ij")
        vis = torch.stack([t, h, w], -1).reshape(-1, 3).float()
        if query_layout == "diagonal":
            n = torch.arange(self.n_latent).float()
            return torch.cat([vis, torch.stack([n, n, n], -1)])
        if query_layout != "grid":
            raise ValueError(f"query_layout must be 'diagonal' or 'grid', got {query_layout!r}")
        parts = [self._lattice(self.iframe_tokens, 0)]
        parts += [self._lattice(self.pframe_tokens, k) for k in range(1, self.frames)]
        return torch.cat([vis, *parts])

    def _lattice(self, n: int, frame: int) -> torch.Tensor:
        gh, gw = self.grid
        rows, cols = lattice_shape(n, self.grid)
        k = torch.arange(n)
        h = (k // cols + 0.5) * gh / rows - 0.5
        w = (k % cols + 0.5) * gw / cols - 0.5
        return torch.stack([torch.full((n,), float(frame)), h.float(), w.float()], -1)


def lattice_shape(n: int, grid: tuple[int, int]) -> tuple[int, int]:
    """The factor pair rows x cols = n whose shape is closest to the grid's: where the n queries
    of one frame sit (cell centres of a rows x cols lattice stretched over the h x w grid)."""
    gh, gw = grid
    rows = min((r for r in range(1, n + 1) if n % r == 0), key=lambda r: abs(math.log(r * r / n) - math.log(gh / gw)))
    return rows, n // rows


def mask_mod_for(layout: TokenLayout, role: str, device="cpu", latent_mask: str = "causal"):
    """The rule as a flex-attention ``mask_mod(b, h, q_idx, kv_idx) -> bool``."""
    if latent_mask not in ("causal", "frame"):
        raise ValueError(f"latent_mask must be 'causal' or 'frame', got {latent_mask!r}")
    kind, frame = layout.kinds_and_frames(device)

    def query_rule(q, k):
        kq, kk, fq, fk = kind[q], kind[k], frame[q], frame[k]
        see_vis = (kk == VISUAL) & torch.where(kq == IFRAME, fk == 0, fk <= fq)
        return see_vis | ((kk != VISUAL) & (k <= q))

    if role == "encoder":
        def mask_mod(b, h, q, k):
            vis_rule = (kind[k] == VISUAL) & (frame[k] <= frame[q])
            return torch.where(kind[q] == VISUAL, vis_rule, query_rule(q, k))
    elif role == "decoder":
        def latent_rule(q, k):     # "frame": everything of frames up to the latent's own
            return frame[k] <= frame[q]

        rule = latent_rule if latent_mask == "frame" else query_rule

        def mask_mod(b, h, q, k):
            kk = kind[k]
            pos_rule = ((kk == VISUAL) & (frame[k] <= frame[q])) | (kk == IFRAME) | ((kk == PFRAME) & (frame[k] <= frame[q]))
            return torch.where(kind[q] == VISUAL, pos_rule, rule(q, k))
    else:
        raise ValueError(f"role must be 'encoder' or 'decoder', got {role!r}")
    return mask_mod


def dense_reference(layout: TokenLayout, role: str, latent_mask: str = "causal") -> torch.Tensor:
    """``L x L`` bool (True = may attend), written region by region straight from the rule text.

    Independent of :func:`mask_mod_for` on purpose: the tests compare the two.
    """
    T, (gh, gw), nI, nP = layout.frames, layout.grid, layout.iframe_tokens, layout.pframe_tokens
    hw, V, L = gh * gw, layout.n_visual, layout.length
    m = torch.zeros(L, L, dtype=torch.bool)
    vis = lambda f: slice(f * hw, (f + 1) * hw)               # visual tokens of frame f
    upto = lambda f: slice(0, (f + 1) * hw)                   # visual tokens of frames <= f
    iq = slice(V, V + nI)
    pq = lambda k: slice(V + nI + (k - 1) * nP, V + nI + k * nP)   # PFrame tokens of frame k (k >= 1)
    for f in range(T):
        m[vis(f), upto(f)] = True
        if role == "decoder":
            m[vis(f), iq] = True
            for k in range(1, f + 1):
                m[vis(f), pq(k)] = True
    # queries / latents: the same rule in both roles, unless the decoder's latents see whole frames
    whole = role == "decoder" and latent_mask == "frame"
    m[iq, vis(0)] = True
    m[iq, iq] = True if whole else torch.ones(nI, nI, dtype=torch.bool).tril()
    for k in range(1, T):
        rows = pq(k)
        m[rows, upto(k)] = True
        m[rows, V:rows.start] = True                          # every earlier query
        m[rows, rows] = True if whole else torch.ones(nP, nP, dtype=torch.bool).tril()
    if role not in ("encoder", "decoder"):
        raise ValueError(f"role must be 'encoder' or 'decoder', got {role!r}")
    return m


class AttentionMask:
    """One layout's mask for one role, in both forms, each built lazily and cached per device.

    With ``slopes`` (one per head) the mask also carries a locality bias: attention logits get
    ``-slope_h * ((h_q - h_k)^2 + (w_q - w_k)^2)`` from the RoPE positions (ALiBi in 2D), so that
    from the first step a token attends mostly to its spatial neighbourhood; a slope of 0 leaves
    a head global. SDPA then takes a float ``H x L x L`` bias (-inf where masked), flex a score_mod.
    """

    def __init__(self, layout: TokenLayout, role: str, slopes: tuple[float, ...] | None = None,
                 query_layout: str = "diagonal", latent_mask: str = "causal"):
        if slopes is not None and query_layout != "grid":
            raise ValueError("a locality bias needs query_layout='grid' (queries placed on the grid)")
        self.layout, self.role, self.slopes, self.query_layout = layout, role, slopes, query_layout
        self.latent_mask = latent_mask
        self._dense: dict[str, torch.Tensor] = {}
        self._bias: dict[str, torch.Tensor] = {}
        self._block: dict[str, object] = {}

    def dense(self, device) -> torch.Tensor:
        """``L x L`` bool, True = may attend."""
        key = str(device)
        if key not in self._dense:
            with torch.inference_mode(False):    # cached: must serve training too
                self._dense[key] = self._build_dense(device)
        return self._dense[key]

    def _build_dense(self, device) -> torch.Tensor:
        idx = torch.arange(self.layout.length, device=device)
        return mask_mod_for(self.layout, self.role, device, self.latent_mask)(None, None, idx[:, None], idx[None, :])

    def _dist2(self, device) -> torch.Tensor:
        hw = self.layout.positions(self.query_layout)[:, 1:].to(device)
        return ((hw[:, None, :] - hw[None, :, :]) ** 2).sum(-1)

    def sdpa_mask(self, device) -> torch.Tensor:
        """What SDPA takes: the bool mask, or the float ``H x L x L`` bias when slopes are set."""
        if self.slopes is None:
            return self.dense(device)
        key = str(device)
        if key not in self._bias:
            with torch.inference_mode(False):
                self._bias[key] = self._build_bias(device)
        return self._bias[key]

    def _build_bias(self, device) -> torch.Tensor:
        slopes = torch.tensor(self.slopes, dtype=torch.float32, device=device)
        bias = -slopes[:, None, None] * self._dist2(device)[None]
        return bias.masked_fill(~self.dense(device)[None], float("-inf"))

    def score_mod(self, device):
        """flex-attention ``score_mod`` adding the locality bias, or None."""
        if self.slopes is None:
            return None
        slopes = torch.tensor(self.slopes, dtype=torch.float32, device=device)
        hw = self.layout.positions(self.query_layout)[:, 1:].to(device)

        def mod(score, b, h, q, k):
            d2 = (hw[q, 0] - hw[k, 0]) ** 2 + (hw[q, 1] - hw[k, 1]) ** 2
            return score - slopes[h] * d2
        return mod

    def block_mask(self, device):
        key = str(device)
        if key not in self._block:
            from torch.nn.attention.flex_attention import create_block_mask
            L = self.layout.length
            self._block[key] = create_block_mask(mask_mod_for(self.layout, self.role, device, self.latent_mask),
                                                 None, None, L, L, device=str(device))
        return self._block[key]


def get_mask(layout: TokenLayout, role: str, slopes: tuple[float, ...] | None = None,
             query_layout: str = "diagonal", latent_mask: str = "causal") -> AttentionMask:
    """A new :class:`AttentionMask` (it builds its forms lazily and keeps them); a model keeps its
    own masks in its ``LayoutCache``, so there is no cache of masks at module level."""
    return AttentionMask(layout, role, slopes, query_layout, latent_mask)
