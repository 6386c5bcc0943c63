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
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness.core.errors import UserError

if TYPE_CHECKING:  # torch is imported when a decode runs, not when a spec's values are checked
    import torch


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
