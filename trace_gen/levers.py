"""Indexer levers: run the indexer on fewer layers and fewer steps, and what the layers and
steps that skip it attend to instead.

At serving scale the indexer's key scan (every cached token's indexer key, every layer, every
step) makes most of a DSA decode's LLC misses. Serving systems read fewer indexer bytes:

- **share** N (IndexCache, arXiv 2603.12201; SGLang's ``index_topk_freq``): the indexer runs on
  *anchor* layers only, and each other layer attends with the selection its anchor made at the
  same step;
- **reuse** S (GVR, arXiv 2604.22312): an anchor scans every S-th decode step only; the steps
  between attend with its last scan's selection, *widened by the tokens decoded since* (no scan
  has scored them, and a decode must not lose its most recent context): a scan at step t0 with
  ``c0`` cached tokens that selected S makes step t attend to ``S ∪ {c0, ..., c - 1}``, up to
  ``k + (t - t0)`` positions, at most ``k + index_reuse - 1``.

Layer kinds. A selection is a set of absolute positions. Gemma 3's sliding-window layers (5 of
6; window 512, their cache holds only the last 511 keys besides the new one) see the last
window of positions only, its full-attention layers all of them. **A layer shares only with an
anchor of its own kind**: at one step every sliding layer sees the same window, so a sliding
anchor's selection is wholly visible to the sliding layers that follow it, and a full layer's
never has to be squeezed into a window (most of it would fall outside, and topping it up to k
would need the layer's own indexer, the very scan being saved). Anchors are therefore chosen
per kind: by default every N-th layer *of each kind*, starting at its first (on a model of one
kind, SmolLM2: layers 0, N, 2N, ...); ``index_layers`` names them instead, and the first layer
of each kind is always an anchor (a layer needs an anchor of its kind at or before it). A layer
uses the nearest anchor of its kind at or before it.

Any selection a layer receives is mapped to the keys it sees: positions outside its window are
dropped, nothing is added. With same-kind sharing nothing is dropped between layers; under
reuse a sliding anchor drops what slid out of its window since the scan, at most as many
positions as the widening added, so a used selection never holds fewer than the scan's k.

Every layer still runs its own indexer (or oracle) for measurement: the log keeps that *own*
selection beside the one actually used (``own_positions``, ``own_recall``), and the rule that
says which (layer, step) scans in a serving system is in the log's metadata
(:meth:`LeverPlan.describe`).

**Streams** (:class:`StreamLevers`, used by ``trace_gen.stream``). A stream reads fewer indexer
bytes where a lever skips the indexer, from any log:

- *What skips what.* A layer that borrows its anchor's selection (share) has no indexer at all,
  as in IndexCache: it neither writes an indexer key nor scans, and has no index phase. An anchor
  at a step that reuses its last scan (reuse) does not scan either, but still writes the new
  token's indexer key (the next scan must see it); nothing waits for that write before the next
  scan, so it goes in the layer's gather phase, beside the new token's KV, and the step has no
  index phase there either. The indexer's scoring FLOPs go with the scan.
- *A log decoded with a lever* (``indexer.levers``) is followed by default: its ``positions`` are
  what the layers attended to, and the geometry's layer g scans at step t iff the log layer it
  replays (``Geometry.layer_map``) scanned (``LeverPlan.scans``); its non-anchor layers have no
  indexer.
- *A lever given to the stream* (``index_share`` N, ``index_reuse`` S; either one given, the
  other is the log's own, 1 in a log without levers) is applied to the log's *own* selections
  (``own_positions`` in a lever log, else ``positions``), so a sweep varies levers without new
  decodes. Anchors are chosen among the **geometry's** layers, every N-th of each kind (a
  geometry layer has the kind of the log layer it replays), as a serving model of that many
  layers would run IndexCache; geometry layer g gathers its anchor a's selection, i.e. the
  rows of log layer ``layer_map[a]`` at the same step. Under reuse every row is the anchor's
  own selection at its last scan step ``t0 = t - t % S`` widened by the positions decoded since
  (``ctx_len(t0) .. ctx_len(t) - 1``), a sliding layer dropping what slid out of its window
  (``sliding_window`` of the log's backbone config), as :class:`LeverState` does in a decode.
  When the given lever is the log's own (and the log named no ``index_layers``) the stream
  follows the log as above.
- *Selection kept* (:meth:`StreamLevers.kept`), the stream lever's stand-in for recall, which
  only a decode with the lever can measure (the attention mass of a selection the layer never
  attended with is not in a log): the share of each layer's own selection that the selection it
  attends with keeps, ``sum |S_used ∩ S_own| / sum |S_own|`` over the log's rows. It is taken
  over the **log's** layers, the lever applied to the backbone's own depth: on a stretched
  geometry neighbouring layers replay one log layer, and counting those copies as kept would
  flatter sharing. A log decoded with the lever has both: its ``recall`` against its
  ``own_recall`` (``recall_kept``, measured) and the overlap of ``positions`` with
  ``own_positions``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from harness.core.errors import UserError

if TYPE_CHECKING:  # torch is imported when a decode runs, not when a spec's values are checked
    import torch

    from trace_gen.indexlog import IndexLog, StepBlock


def parse_layers(value: str) -> str:
    """``index_layers`` in canonical form: comma-separated layer numbers, sorted and unique
    (``"12, 0,6"`` -> ``"0,6,12"``); a UserError when it is not such a list."""
    parts = [p.strip() for p in value.split(",")]
    if not all(p.isdigit() for p in parts):
        raise UserError(f"index layers must be layer numbers separated by commas, such as 0,6,12; got {value!r}")
    return ",".join(str(n) for n in sorted({int(p) for p in parts}))


@dataclass(frozen=True)
class LeverPlan:
    """Which layer attends with whose selection, and which steps scan.

    ``anchor_of[l]`` is the layer whose selection layer l attends with (l itself: an anchor,
    which runs the indexer); an anchor scans at the steps ``t % reuse == 0``."""

    share: int
    reuse: int
    anchor_of: tuple[int, ...]
    index_layers: str | None = None

    @classmethod
    def make(cls, layer_types: list[str], share: int = 1, reuse: int = 1,
             index_layers: str | None = None) -> LeverPlan:
        """The plan for layers of ``layer_types`` ('sliding' or 'full' each; see the module
        docstring for how anchors are chosen)."""
        if index_layers is not None:
            anchors = {int(n) for n in parse_layers(index_layers).split(",")}
            beyond = sorted(n for n in anchors if n >= len(layer_types))
            if beyond:
                raise UserError(f"index layers {', '.join(map(str, beyond))} do not exist: the backbone has "
                                f"{len(layer_types)} layers (0 .. {len(layer_types) - 1})")
        else:
            anchors = set()
            for kind in dict.fromkeys(layer_types):
                anchors.update([layer for layer, t in enumerate(layer_types) if t == kind][::share])
        anchor_of, latest = [], {}
        for layer, kind in enumerate(layer_types):
            if layer in anchors or kind not in latest:
                latest[kind] = layer
            anchor_of.append(latest[kind])
        return cls(share, reuse, tuple(anchor_of), index_layers)

    @property
    def active(self) -> bool:
        """Does any layer or step attend with a selection other than its own?"""
        return self.reuse > 1 or any(a != layer for layer, a in enumerate(self.anchor_of))

    def scans(self, layer: int, step: int) -> bool:
        """Does ``layer`` scan its indexer keys at decode ``step`` (what a serving system reads)?"""
        return self.anchor_of[layer] == layer and step % self.reuse == 0

    def describe(self) -> dict:
        """The plan as the index log's metadata records it (``indexer.levers``)."""
        layers = len(self.anchor_of)
        anchors = sorted(set(self.anchor_of))
        return {"index_share": self.share, "index_reuse": self.reuse, "index_layers": self.index_layers,
                "anchor_layers": anchors, "anchor_of": list(self.anchor_of),
                "scan_rule": "layer l scans its indexer keys at step t iff anchor_of[l] == l and "
                             "t % index_reuse == 0; the other rows attend with positions they did not select",
                "scan_share": len(anchors) / layers / self.reuse}


class LeverState:
    """The selections a decode's levers carry between layers and steps: per anchor layer, its
    last scan's and this step's selection, as masks over absolute positions [B, ctx_len]."""

    def __init__(self, plan: LeverPlan):
        self.plan = plan
        self.step = 0
        self.scanned: dict[int, torch.Tensor] = {}
        self.current: dict[int, torch.Tensor] = {}

    def begin_step(self, step: int) -> None:
        self.step = step
        self.current.clear()

    def used(self, layer: int, own: torch.Tensor, start: int, visible: int, ctx_len: int) -> torch.Tensor:
        """The slots [B, visible] (bool) ``layer`` attends to this step, given its own selection
        ``own`` [B, k] (visible slots; slot i holds position ``start + i``)."""
        import torch

        anchor = self.plan.anchor_of[layer]
        if anchor != layer:
            chosen = self.current[anchor]
        elif self.plan.scans(layer, self.step) or layer not in self.scanned:
            chosen = torch.zeros(own.shape[0], ctx_len, dtype=torch.bool).scatter_(1, own + start, True)
            self.scanned[layer] = chosen
        else:  # reuse the last scan, widened by the positions decoded since
            last = self.scanned[layer]
            chosen = torch.cat([last, torch.ones(last.shape[0], ctx_len - last.shape[1], dtype=torch.bool)], dim=1)
        self.current[layer] = chosen
        return chosen[:, start:start + visible]


# --- streams ---------------------------------------------------------------------------------------

def layer_kinds(meta: dict) -> list[str]:
    """'sliding' or 'full' per layer of a log: its backbone config's ``layer_types`` (all full
    when the config does not record them)."""
    layers = int(meta["layers"])
    types = (meta["backbone"].get("config") or {}).get("layer_types")
    if types is None:
        return ["full"] * layers
    if len(types) != layers:
        raise UserError(f"the log's backbone config gives {len(types)} layer types for its {layers} layers")
    return ["sliding" if "sliding" in t else "full" for t in types]


def layer_windows(meta: dict) -> np.ndarray:
    """The positions each log layer sees, back from the newest (0: all of them): the backbone's
    ``sliding_window`` on its sliding layers."""
    window = int((meta["backbone"].get("config") or {}).get("sliding_window") or 0)
    return np.array([window if kind == "sliding" else 0 for kind in layer_kinds(meta)], dtype=np.int64)


def log_plan(meta: dict) -> LeverPlan | None:
    """The plan a log was decoded with (``indexer.levers``; its ``anchor_of`` as recorded), or None."""
    levers = meta["indexer"].get("levers")
    if not levers:
        return None
    kinds = layer_kinds(meta)
    plan = LeverPlan.make(kinds, int(levers.get("index_share", 1)), int(levers.get("index_reuse", 1)),
                          levers.get("index_layers"))
    anchor_of = levers.get("anchor_of", plan.anchor_of)
    if not (isinstance(anchor_of, (list, tuple)) and len(anchor_of) == len(kinds)
            and all(isinstance(a, int) and 0 <= a <= layer for layer, a in enumerate(anchor_of))):
        raise UserError(f"the log's indexer.levers.anchor_of is not an anchor at or before each of its "
                        f"{len(kinds)} layers")
    return LeverPlan(plan.share, plan.reuse, tuple(anchor_of), plan.index_layers)


@dataclass(frozen=True)
class StreamLevers:
    """The levers of one stream over a geometry's layers (see the module docstring, *Streams*).

    ``origin``: ``none`` (no lever), ``log`` (the log's own, followed) or ``stream`` (a lever
    given to the stream, applied to the log's own selections). Per geometry layer g,
    ``gather_layer[g]`` is the log layer whose rows it gathers and ``indexer[g]`` whether it has
    an indexer (writes its key every step; scans at the steps ``t % reuse == 0``);
    ``log_anchor_of`` is the lever on the log's own layers (for :meth:`kept`), ``windows`` the
    log layers' sliding windows (0: none) and ``own`` whether the rows come from
    ``own_positions``."""

    origin: str
    share: int
    reuse: int
    gather_layer: np.ndarray
    indexer: np.ndarray
    log_anchor_of: tuple[int, ...]
    windows: np.ndarray
    own: bool = False

    @classmethod
    def make(cls, log: IndexLog, layer_map: np.ndarray, share: int | None = None,
             reuse: int | None = None) -> StreamLevers:
        """The levers of a stream of ``log`` replayed by geometry layers ``layer_map`` (log layer
        of each), given the stream's ``index_share`` and ``index_reuse`` (None: the log's own)."""
        kinds, windows = layer_kinds(log.meta), layer_windows(log.meta)
        logged = log_plan(log.meta)
        own_share, own_reuse = (logged.share, logged.reuse) if logged else (1, 1)
        share, reuse = share or own_share, reuse or own_reuse
        layer_map = np.asarray(layer_map, dtype=np.int64)
        ones = np.ones(len(layer_map), dtype=np.uint8)
        if (share, reuse) == (own_share, own_reuse) and (logged is None or logged.index_layers is None):
            if logged is None or not logged.active:
                return cls("none", 1, 1, layer_map, ones, tuple(range(len(kinds))), windows)
            anchor = np.asarray(logged.anchor_of, dtype=np.int64)
            return cls("log", share, reuse, layer_map, (anchor[layer_map] == layer_map).astype(np.uint8),
                       logged.anchor_of, windows)
        plan = LeverPlan.make([kinds[layer] for layer in layer_map], share, reuse)
        anchor = np.asarray(plan.anchor_of, dtype=np.int64)
        return cls("stream", share, reuse, layer_map[anchor], (anchor == np.arange(len(anchor))).astype(np.uint8),
                   LeverPlan.make(kinds, share, reuse).anchor_of, windows, log.has_own)

    def scans(self, layer, step) -> np.ndarray:
        """Does geometry ``layer`` scan its indexer keys at decode ``step`` (numpy-broadcasting)?"""
        return (self.indexer[layer] == 1) & (np.asarray(step) % self.reuse == 0)

    def max_row(self, log: IndexLog) -> int:
        """The most positions one gathered row holds (the buffers' bound)."""
        if self.origin != "stream":
            return log.shape.max_row
        return max(log.shape.max_row, log.topk) + self.reuse - 1

    def rows(self, log: IndexLog) -> Iterator[tuple[StepBlock, np.ndarray, np.ndarray]]:
        """Each block of ``log`` with the rows the stream gathers from, one per log row (CSR
        offsets from 0, positions): as logged, or under a stream lever the own selections,
        widened at the steps that reuse."""
        carry = None
        for block in log.blocks():
            if self.origin != "stream":
                yield block, block.offsets, block.positions
                continue
            offsets, positions = (block.own_offsets, block.own_positions) if self.own else (block.offsets,
                                                                                           block.positions)
            if self.reuse > 1:
                offsets, positions, carry = _widen(block, offsets, positions, self.reuse, self.windows,
                                                   log.layers * log.requests, carry)
            yield block, offsets, positions

    def describe(self) -> dict:
        """The levers as a result records them; ``scan_share``: the share of (geometry layer,
        step) pairs that scan."""
        return {"origin": self.origin, "index_share": self.share, "index_reuse": self.reuse,
                "indexer_layers": np.flatnonzero(self.indexer).tolist(), "gather_layer": self.gather_layer.tolist(),
                "scan_share": float(self.indexer.sum()) / len(self.indexer) / self.reuse}

    def kept(self, log: IndexLog) -> dict:
        """``selection_kept``: the share of the layers' own selections that the selections they
        attend with keep, over the log's rows (the lever on the log's own layers; see the module
        docstring); ``recall_kept``: in a log decoded with the lever, the attention mass its
        used selections carry over what its own would (``sum recall / sum own_recall``, measured),
        else None; both 1 without a lever."""
        if self.origin == "none":
            return {"selection_kept": 1.0, "recall_kept": 1.0}
        if self.origin == "log":
            if not log.has_own:
                return {"selection_kept": None, "recall_kept": None}
            t = log.table(["positions", "own_positions", "recall", "own_recall"])
            used, own = (_csr(t.column(c)) for c in ("positions", "own_positions"))
            rows = np.arange(t.num_rows)
            recall, own_recall = (np.nansum(t.column(c).to_numpy(zero_copy_only=False).astype(np.float64))
                                  for c in ("recall", "own_recall"))
            return {"selection_kept": _overlap(used, rows, own, rows) / max(len(own[1]), 1),
                    "recall_kept": recall / own_recall if own_recall > 0 else None}
        anchor = np.asarray(self.log_anchor_of, dtype=np.int64)
        kept = total = 0
        for block, offsets, positions in self.rows(log):
            own = (block.own_offsets, block.own_positions) if self.own else (block.offsets, block.positions)
            rows = np.arange(len(block.layer))
            used_rows = rows - (block.layer - anchor[block.layer]) * log.requests  # the anchor's row, same step
            kept += _overlap((offsets, positions), used_rows, own, rows)
            total += len(own[1])
        return {"selection_kept": kept / max(total, 1), "recall_kept": None}


def _widen(block: StepBlock, offsets: np.ndarray, positions: np.ndarray, reuse: int, windows: np.ndarray,
           per_step: int, carry: tuple | None) -> tuple[np.ndarray, np.ndarray, tuple]:
    """The rows of a block under reuse: a step ``t % reuse == 0`` as given (and remembered in
    ``carry``: its offsets, positions and ctx_len, across blocks), any other step the last such
    step's rows widened by the positions decoded since, less what slid out of a sliding layer's
    window."""
    window = windows[block.layer[:per_step].astype(np.int64)]  # every step's rows: the same layers, in order
    counts, parts = [], []
    for s0 in range(0, len(block.step), per_step):
        a, b = offsets[s0], offsets[s0 + per_step]
        ctx = block.ctx_len[s0:s0 + per_step].astype(np.int64)
        if block.step[s0] % reuse == 0:
            carry = (offsets[s0:s0 + per_step + 1] - a, positions[a:b].copy(), ctx)
            counts.append(np.diff(offsets[s0:s0 + per_step + 1]))
            parts.append(positions[a:b])
            continue
        base_offsets, base, scanned_ctx = carry
        added = ctx - scanned_ctx
        rows = np.arange(per_step)
        new = np.repeat(scanned_ctx, added) + np.arange(added.sum()) - np.repeat(np.cumsum(added) - added, added)
        row_of = np.concatenate([np.repeat(rows, np.diff(base_offsets)), np.repeat(rows, added)])
        order = np.argsort(row_of, kind="stable")  # within a row, the scan's positions come before the new ones
        pos, row_of = np.concatenate([base, new])[order], row_of[order]
        keep = (window[row_of] == 0) | (pos >= (ctx - window)[row_of])
        counts.append(np.bincount(row_of[keep], minlength=per_step))
        parts.append(pos[keep])
    out = np.zeros(len(block.step) + 1, dtype=np.int64)
    np.cumsum(np.concatenate(counts), out=out[1:])
    return out, np.concatenate(parts).astype(np.int32), carry


def _csr(column) -> tuple[np.ndarray, np.ndarray]:
    """A list column as CSR offsets (from 0) and values."""
    array = column.combine_chunks()
    offsets = array.offsets.to_numpy().astype(np.int64)
    values = array.values.to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]]
    return offsets - offsets[0], values


def _overlap(a: tuple, rows_a: np.ndarray, b: tuple, rows_b: np.ndarray) -> int:
    """``sum_i |A[rows_a[i]] ∩ B[rows_b[i]]|`` of two CSR row sets ``(offsets, positions)``."""
    def keys(csr, rows):
        offsets, positions = csr
        starts, counts = offsets[rows], offsets[rows + 1] - offsets[rows]
        at = np.repeat(starts - (np.cumsum(counts) - counts), counts) + np.arange(counts.sum())
        return (np.repeat(np.arange(len(rows), dtype=np.int64), counts) << 32) | positions[at].astype(np.int64)

    return int(np.isin(keys(a, rows_a), keys(b, rows_b)).sum())
