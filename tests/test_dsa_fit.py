"""The dsa indexer's fit: the hand-written loss and gradient against autograd, and fits that learn."""

import pytest
import torch

from trace_gen.indexers import dsa

pytestmark = pytest.mark.usefixtures("private_cache")


def reference_loss(a, b, w, windows):
    """The fit's loss by its definition, over every key and through autograd: the cross-entropy
    of softmax(score) on the visible keys to the target, averaged over queries and windows."""
    heads, _, dim = b.shape
    total = 0.0
    for q, k, target, visible in windows:
        qi = torch.einsum("mhD,hdD->mhd", q.view(q.shape[0], heads, dim), b)
        s = torch.einsum("h,mhn->mn", w, torch.relu(torch.einsum("mhd,nd->mhn", qi, k @ a.T)))
        logq = torch.log_softmax(s.masked_fill(~visible, float("-inf")), dim=-1).masked_fill(~visible, 0)
        total = total - (target * logq).sum(-1).mean()
    return total / len(windows)


@pytest.mark.parametrize("window", [None, 7])
def test_fit_loss_and_gradient_equal_autograd(monkeypatch, window):
    # 2 windows of 40 keys, 11 queries each in blocks of 3 (the last one short), 4 query heads on
    # 2 key heads; with a window, each query sees its last 7 positions only (a sliding layer)
    monkeypatch.setattr(dsa, "FIT_BLOCK", 3)
    gen = torch.Generator().manual_seed(0)
    heads, kheads, dim, d_i, n, m = 4, 2, 5, 6, 40, 11
    a = torch.randn(d_i, kheads * dim, generator=gen, dtype=torch.float64)
    b = torch.randn(heads, d_i, dim, generator=gen, dtype=torch.float64)
    w = torch.randn(heads, generator=gen, dtype=torch.float64)
    windows, reference = [], []
    for _ in range(2):
        pos = torch.randperm(n - 3, generator=gen)[:m].sort().values + 3
        visible = torch.arange(n) <= pos[:, None]
        if window:
            visible &= torch.arange(n) > pos[:, None] - window
        q = torch.randn(m, heads * dim, generator=gen, dtype=torch.float64)
        k = torch.randn(n, kheads * dim, generator=gen, dtype=torch.float64)
        target = torch.softmax(torch.randn(m, n, generator=gen, dtype=torch.float64).masked_fill(~visible, float("-inf")), -1)
        windows.append(dsa._Window(q, k, target, visible, window))
        reference.append((q, k, target, visible))
    with torch.enable_grad():  # loading a backbone turns autograd off for the process (other tests do)
        params = [x.clone().requires_grad_() for x in (a, b, w)]
        expected = reference_loss(*params, reference)
        expected.backward()
    loss, grads = dsa.fit_loss(a, b, w, windows)
    assert loss == pytest.approx(float(expected.detach()), rel=1e-12)
    assert dsa.fit_loss(a, b, w, windows, grad=False) == (loss, None)
    for p, g in zip(params, grads):
        assert torch.allclose(g, p.grad, rtol=1e-9, atol=1e-12)
    entropy = -sum(float(torch.special.xlogy(t, t).sum(-1).mean()) for _, _, t, _ in reference) / 2
    assert sum(win.entropy() for win in windows) / 2 == pytest.approx(entropy, rel=1e-12)


def test_fit_lowers_the_kl_of_every_layer_of_tiny_llama():
    from trace_gen.backbones import load_backbone

    layers, fit = dsa.calibrate(load_backbone("tiny-llama"),
                                dsa.fit_settings({"iterations": 20, "calibration_tokens": 256, "queries": 64}),
                                progress=False)
    assert len(layers) == 3 and fit["algorithm"] == dsa.FIT_VERSION
    for record in fit["layers"]:
        assert 0 <= record["kl_final"] < 0.8 * record["kl_initial"]


def test_a_new_fit_version_is_another_fit(monkeypatch):
    from trace_gen.backbones import load_backbone

    bb, settings = load_backbone("tiny-llama"), dsa.fit_settings({})
    key = dsa.fit_key(bb, settings)
    assert dsa.fit_key(bb, settings) == key
    monkeypatch.setattr(dsa, "FIT_VERSION", dsa.FIT_VERSION + 1)
    assert dsa.fit_key(bb, settings) != key
