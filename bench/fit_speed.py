"""dsa indexer fit: seconds per layer and final KL, the current fit against the one it replaced.

For each backbone, one calibration prefill at the default fit settings (2 x 2,048 tokens of
python-docs, 512 queries per layer, 100 Adam steps), then every layer (or --layers) fitted by
the current algorithm (trace_gen.indexers.dsa.FIT_VERSION 2: the hand-written blocked loss and
gradient of fit_loss) and, with --old, by version 1 (kept below for this comparison: autograd,
every query scored against every key). Prints each layer's seconds and final KL (nats), then the
means and the old/new time ratio. One torch thread by default.

Measured on a 2-core machine shared with a gem5 build (1 thread; the absolute times vary by 2-3 x
with the load, so compare the ratios of one run), --old on the layers shown:
  tiny-llama    (all 3 layers)      old 7.1 s/layer, new 2.8 s/layer (2.5 x); mean KL 1.45e-5 both
  smollm2-135m  (layers 0,10,20,29) old 14.6 s/layer, new 5.2 s/layer (2.8 x); KL equal to 4 digits
  gemma3-270m   (layers 0,5,11,17)  old 6.8 s/layer, new 3.5 s/layer (1.9 x); KL equal but layer
                                    11 (0.0602 against 0.0593: Adam's last steps are unstable there)
All layers, new only, in a quieter moment: smollm2-135m 4.1 s/layer (mean KL 0.0459, as version
1), gemma3-270m 3.0 s/layer (0.0301); the prefill capture adds 30-45 s per real backbone. Under
heavier load version 1 took 27 minutes for SmolLM2's 30 layers (48 s/layer).

Run it from the checkout to measure (bench/ is first on sys.path, not the checkout):

    PYTHONPATH=. python bench/fit_speed.py [--backbones tiny-llama smollm2-135m gemma3-270m]
                                           [--layers 0,15] [--old] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import torch

from trace_gen.backbones import load_backbone
from trace_gen.indexers.dsa import LayerIndexer, _flat_q, fit_layer, fit_settings, query_rows
from trace_gen.prefill import capture_prefill, prompts


def old_fit_layer(query, visible, key, scaling, d_i, iterations=100, lr=1e-3) -> float:
    """FIT_VERSION 1 (without window_keys): Adam on autograd, every query scored against every key
    and masked; returns the final KL."""
    from trace_gen.attention import logits_of

    batch, heads, _, dim = query.shape
    kheads = key.shape[1]
    data = []
    with torch.no_grad():
        for b in range(batch):
            logits = logits_of(query[b:b + 1], key[b:b + 1], None, scaling)
            target = torch.softmax(logits.masked_fill(~visible[b], float("-inf")), dim=-1).mean(dim=1)[0]
            data.append((_flat_q(query[b:b + 1])[0], _flat_q(key[b:b + 1])[0], target, visible[b]))
        layer = LayerIndexer(heads, dim, kheads * dim, d_i)
        _, _, v = torch.linalg.svd(torch.cat([k for _, k, _, _ in data]), full_matrices=False)
        basis = v[:d_i]
        layer.a[: basis.shape[0]] = basis * scaling ** 0.5
        for h in range(heads):
            kv = h // (heads // kheads)
            layer.b[h, : basis.shape[0]] = basis[:, kv * dim:(kv + 1) * dim] * scaling ** 0.5
    opt = torch.optim.Adam(layer.parameters(), lr=lr)
    neg = torch.finfo(torch.float32).min

    def cross_entropy():
        total = 0.0
        for q, k, target, seen in data:
            s = layer.scores(layer.queries(q), layer.keys(k)).masked_fill(~seen, neg)
            total = total - (target * torch.log_softmax(s, dim=-1).masked_fill(~seen, 0)).sum(-1).mean()
        return total / len(data)

    with torch.enable_grad():
        for _ in range(iterations):
            opt.zero_grad()
            cross_entropy().backward()
            opt.step()
    with torch.no_grad():
        entropy = sum(-(t * torch.log(t.clamp_min(1e-30))).sum(-1).mean() for _, _, t, _ in data) / len(data)
        return float(cross_entropy() - entropy)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", nargs="+", default=["tiny-llama", "smollm2-135m"])
    ap.add_argument("--layers", default=None, help="comma-separated layer numbers (default: every layer)")
    ap.add_argument("--old", action="store_true", help="also fit each layer with FIT_VERSION 1")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    s = fit_settings({})
    for name in a.backbones:
        bb = load_backbone(name)
        ids, _ = prompts(bb, s["calibration_text"], s["calibration_tokens"], s["calibration_windows"], s["seed"])
        gen = torch.Generator().manual_seed(s["seed"])
        rows = query_rows(ids.shape[1], ids.shape[0], bb.layers, s["queries"], s["min_query_pos"], gen)
        t = time.perf_counter()
        captured = capture_prefill(bb, ids, rows)
        print(f"{name}: prefill capture {time.perf_counter() - t:.1f} s ({ids.shape[0]} x {ids.shape[1]} tokens)")
        layers = [int(x) for x in a.layers.split(",")] if a.layers else range(bb.layers)
        new, old = [], []
        for i in layers:
            query, visible, key, scaling = captured[i]
            t = time.perf_counter()
            _, stats = fit_layer(query, visible, key, scaling, s["d_I"], s["iterations"], s["lr"])
            new.append((time.perf_counter() - t, stats["kl_final"]))
            line = f"  layer {i:2d} {bb.layer_types()[i]:7s} new {new[-1][0]:5.1f} s, KL {new[-1][1]:.4g}"
            if a.old:
                t = time.perf_counter()
                kl = old_fit_layer(query, visible, key, scaling, s["d_I"])
                old.append((time.perf_counter() - t, kl))
                line += f" | old {old[-1][0]:5.1f} s, KL {kl:.4g}"
            print(line, flush=True)
        for label, runs in (("new", new), ("old", old)):
            if runs:
                print(f"  {label}: {sum(r[0] for r in runs) / len(runs):.1f} s/layer, "
                      f"mean final KL {sum(r[1] for r in runs) / len(runs):.4g} over {len(runs)} layers")
        if old:
            print(f"  old/new time: {sum(r[0] for r in old) / sum(r[0] for r in new):.1f} x")


if __name__ == "__main__":
    main()
