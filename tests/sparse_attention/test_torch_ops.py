"""torch.ops.ds sparse attention ops (build/lib/libds_torch.so) against dense float64 references.

Usage: python3 test_torch_ops.py path/to/libds_torch.so
Runs every test_* function; exits non-zero if any fails.
"""
import sys
import time
import traceback

import torch

INF = float("inf")


def element_mask(layout, block):
    return layout.ne(0).repeat_interleave(block, 1).repeat_interleave(block, 2)


def dense_to_sparse(x, layout, block):
    """[Z, H, M, N] -> [Z, nnz, b, b], blocks in layout.nonzero() order (DeepSpeed's test helper)."""
    blocks = [x[:, h, r * block:(r + 1) * block, c * block:(c + 1) * block] for h, r, c in layout.nonzero().tolist()]
    return torch.stack(blocks, dim=1)


def sparse_to_dense(s, layout, block):
    z = s.shape[0]
    h, r, c = layout.shape
    out = s.new_zeros(z, h, r * block, c * block)
    for n, (hh, rr, cc) in enumerate(layout.nonzero().tolist()):
        out[:, hh, rr * block:(rr + 1) * block, cc * block:(cc + 1) * block] = s[:, n]
    return out


def additive(mask, mode):
    return mask if mode == "add" else torch.zeros_like(mask).masked_fill(mask == 0, -INF)


def masked_softmax(scores, allowed):
    """Softmax over allowed entries; rows with nothing allowed give 0 (DeepSpeed gives NaN)."""
    s = scores.masked_fill(~allowed, -INF)
    row_ok = (s > -INF).any(-1, keepdim=True)
    return torch.softmax(s.masked_fill(~row_ok, 0.0), -1) * row_ok


def dense_scores(s, layout, block, rpe=None, kpm=None, am=None, kpm_mode="add", am_mode="mul"):
    seq_q, seq_k = s.shape[-2], s.shape[-1]
    if rpe is not None:
        s = s + rpe
    if kpm is not None:
        s = s + additive(kpm, kpm_mode)[:, None, None, :]
    if am is not None:
        s = s + additive(am, am_mode)
    allowed = element_mask(layout, block)[:, :seq_q, :seq_k].unsqueeze(0).expand_as(s)
    return masked_softmax(s, allowed & (s > -INF))


def dense_attention(q, k, v, layout, block, scale=None, **masks):
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    return dense_scores(torch.matmul(q, k.transpose(-1, -2)) * scale, layout, block, **masks) @ v


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def leaf(*shape, dtype=torch.float64):
    return torch.randn(*shape, dtype=torch.float64).to(dtype).requires_grad_()


def random_layout(h, r, c, p, seed):
    g = torch.Generator().manual_seed(seed)
    layout = (torch.rand(h, r, c, generator=g) < p).long()
    for hh in range(h):
        for rr in range(r):
            layout[hh, rr, rr % c] = 1
    return layout


# ---- tests -------------------------------------------------------------------------------------------
def test_make_layout_from_json():
    ops = torch.ops.ds
    layout = ops.make_layout('{"mode": "fixed", "different_layout_per_head": true, '
                             '"num_different_global_patterns": 4}', 16, 128)
    assert layout.dtype == torch.int64 and layout.shape == (16, 8, 8), layout.shape
    head1 = " ".join("".join("1" if x else "." for x in row) for row in layout[1].tolist())
    assert head1 == " ".join(["1111..1."] * 4 + ["..1.1111"] * 4), head1
    assert torch.equal(layout[5], layout[1])
    bigbird = '{"mode": "bigbird", "num_random_blocks": 2, "seed": 7}'
    a, b = ops.make_layout(bigbird, 2, 256), ops.make_layout(bigbird, 2, 256)
    assert torch.equal(a, b), "seeded layouts must be reproducible"
    assert not torch.equal(a, ops.make_layout('{"mode": "bigbird", "num_random_blocks": 2, "seed": 8}', 2, 256))
    local = ops.make_layout('{"mode": "local_sliding_window"}', 1, 64)  # unidirectional by default
    assert torch.equal(local[0], torch.tensor([[1, 0, 0, 0], [1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1]]))
    try:
        ops.make_layout('{"mode": "fixed", "block": 24}', 4, 96)
    except ValueError as e:
        assert "sparse_attention.block" in str(e), str(e)
    else:
        raise AssertionError("block 24 must be rejected")
    try:
        ops.make_layout('{"mode": "fixed"}', 4, 100)
    except ValueError as e:
        assert "Sequence Length, 100, needs to be dividable by Block size 16!" in str(e), str(e)
    else:
        raise AssertionError("seq 100 must be rejected")


def test_sparse_attention_matches_dense_any_length():
    torch.manual_seed(1)
    for (z, h, s, d, block) in [(2, 4, 97, 40, 16), (1, 1, 70, 72, 32), (1, 2, 128, 16, 64)]:
        nb = -(-s // block)
        layout = random_layout(h, nb, nb, 0.4, s)
        q, k, v = leaf(z, h, s, d), leaf(z, h, s, d), leaf(z, h, s, d)
        rpe = leaf(z, h, s, s)
        kpm = torch.zeros(z, s, dtype=torch.float64)
        kpm[:, -3:] = -10000.0
        am = torch.ones(s, s, dtype=torch.float64).tril()
        out = torch.ops.ds.sparse_attention(q, k, v, layout, block, rpe=rpe, key_padding_mask=kpm, attn_mask=am)
        ref = dense_attention(q, k, v, layout, block, rpe=rpe, kpm=kpm, am=am)
        assert out.shape == q.shape
        assert rel_err(out, ref) < 1e-12, rel_err(out, ref)
        w = torch.randn_like(ref)
        g = torch.autograd.grad((out * w).sum(), (q, k, v, rpe))
        g_ref = torch.autograd.grad((ref * w).sum(), (q, k, v, rpe))
        for name, a, b in zip("qkvr", g, g_ref):
            assert rel_err(a, b) < 1e-12, (name, rel_err(a, b))


def test_sparse_attention_scale_modes_and_float32():
    torch.manual_seed(2)
    layout = random_layout(2, 3, 3, 0.5, 3)
    q, k, v = (torch.randn(1, 2, 48, 16, dtype=torch.float64) for _ in range(3))
    kpm = (torch.rand(1, 48) > 0.2).double()
    am = torch.randn(48, 48, dtype=torch.float64)
    out = torch.ops.ds.sparse_attention(q, k, v, layout, 16, 0.3, None, kpm, am, "mul", "add")
    ref = dense_attention(q, k, v, layout, 16, scale=0.3, kpm=kpm, am=am, kpm_mode="mul", am_mode="add")
    assert rel_err(out, ref) < 1e-12
    out32 = torch.ops.ds.sparse_attention(q.float(), k.float(), v.float(), layout, 16, 0.3, None, kpm.float(),
                                          am.float(), "mul", "add")
    assert out32.dtype == torch.float32 and rel_err(out32, ref) < 1e-5


def test_sparse_attention_gradcheck():
    torch.manual_seed(3)
    layout = torch.tensor([[[1, 0], [1, 1]], [[1, 1], [0, 1]]])
    inputs = (leaf(1, 2, 24, 3), leaf(1, 2, 24, 3), leaf(1, 2, 24, 3), leaf(1, 1, 24, 24))
    kpm = torch.zeros(1, 24, dtype=torch.float64)
    kpm[0, 20:] = -INF
    fn = lambda q, k, v, r: torch.ops.ds.sparse_attention(q, k, v, layout, 16, rpe=r, key_padding_mask=kpm)
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-7, fast_mode=True)


def test_blocksparse_matmul_all_modes_and_transposes():
    torch.manual_seed(4)
    block, h = 16, 2
    layout = random_layout(h, 3, 2, 0.5, 5)
    m, n = 3 * block, 2 * block
    op = lambda x, t: x.transpose(-1, -2) if t else x
    for mode in ("sdd", "dsd", "dds"):
        for ta in (False, True):
            for tb in (False, True):
                if mode == "sdd":
                    a = leaf(2, h, *((40, m) if ta else (m, 40)))
                    b = leaf(2, h, *((n, 40) if tb else (40, n)))
                    ref = dense_to_sparse(op(a, ta) @ op(b, tb), layout, block)
                elif mode == "dsd":
                    a = leaf(2, int(layout.sum()), block, block)
                    inner = m if ta else n
                    b = leaf(2, h, *((24, inner) if tb else (inner, 24)))
                    ref = op(sparse_to_dense(a, layout, block), ta) @ op(b, tb)
                else:
                    b = leaf(2, int(layout.sum()), block, block)
                    inner = n if tb else m
                    a = leaf(2, h, *((inner, 24) if ta else (24, inner)))
                    ref = op(a, ta) @ op(sparse_to_dense(b, layout, block), tb)
                out = torch.ops.ds.blocksparse_matmul(a, b, layout, block, mode, ta, tb)
                assert out.shape == ref.shape, (mode, ta, tb, out.shape, ref.shape)
                assert rel_err(out, ref) < 1e-13, (mode, ta, tb)
                w = torch.randn_like(ref)
                g = torch.autograd.grad((out * w).sum(), (a, b))
                g_ref = torch.autograd.grad((ref * w).sum(), (a, b))
                assert rel_err(g[0], g_ref[0]) < 1e-13 and rel_err(g[1], g_ref[1]) < 1e-13, (mode, ta, tb)
    small = torch.tensor([[[1, 0], [1, 1]]])
    for mode, shapes in (("sdd", ((1, 1, 32, 2), (1, 1, 2, 32))), ("dsd", ((1, 3, 16, 16), (1, 1, 32, 2))),
                         ("dds", ((1, 1, 2, 32), (1, 3, 16, 16)))):
        args = tuple(leaf(*s) for s in shapes)
        assert torch.autograd.gradcheck(lambda x, y: torch.ops.ds.blocksparse_matmul(x, y, small, 16, mode), args,
                                        eps=1e-6, atol=1e-7, fast_mode=True)


def test_blocksparse_softmax_masks_rpe_and_nan_rows():
    torch.manual_seed(6)
    block, h, z, nb = 16, 2, 2, 4
    s = nb * block
    layout = random_layout(h, nb, nb, 0.5, 7)
    for kpm_mode in ("add", "mul"):
        for am_mode in ("add", "mul"):
            x = leaf(z, int(layout.sum()), block, block)
            rpe = leaf(z, h, s, s)
            kpm = torch.randn(z, s, dtype=torch.float64) if kpm_mode == "add" else \
                torch.randint(0, 2, (z, s)).double()
            am = torch.randn(s, s, dtype=torch.float64) if am_mode == "add" else (torch.rand(s, s) > 0.3).double()
            y = torch.ops.ds.blocksparse_softmax(x, layout, block, 0.4, rpe, kpm, am, kpm_mode, am_mode)
            ref = dense_to_sparse(dense_scores(sparse_to_dense(x, layout, block) * 0.4, layout, block, rpe=rpe,
                                               kpm=kpm, am=am, kpm_mode=kpm_mode, am_mode=am_mode), layout, block)
            assert not torch.isnan(y).any()
            assert rel_err(y, ref) < 1e-12, (kpm_mode, am_mode, rel_err(y, ref))
            w = torch.randn_like(ref)
            g = torch.autograd.grad((y * w).sum(), (x, rpe))
            g_ref = torch.autograd.grad((ref * w).sum(), (x, rpe))
            assert rel_err(g[0], g_ref[0]) < 1e-12 and rel_err(g[1], g_ref[1]) < 1e-12, (kpm_mode, am_mode)
    # A row whose keys are all masked: 0, not DeepSpeed's NaN.
    one = torch.tensor([[[1, 0], [1, 1]]])
    x = leaf(1, 3, 16, 16)
    kpm = torch.zeros(1, 32, dtype=torch.float64)
    kpm[0, :16] = -INF
    y = torch.ops.ds.blocksparse_softmax(x, one, 16, key_padding_mask=kpm)
    assert torch.equal(y[:, 0], torch.zeros_like(y[:, 0])) and not torch.isnan(y).any()
    assert torch.autograd.gradcheck(lambda t: torch.ops.ds.blocksparse_softmax(t, one, 16, 0.5), (leaf(1, 3, 16, 16),),
                                    eps=1e-6, atol=1e-7, fast_mode=True)


def test_classes_keep_tables_and_match_the_ops():
    """torch.classes.ds.SparseAttention / BlockSparseMatMul / BlockSparseSoftmax (tables built once)."""
    torch.manual_seed(6)
    layout = random_layout(2, 4, 4, 0.5, 7)
    q, k, v = leaf(2, 2, 60, 8), leaf(2, 2, 60, 8), leaf(2, 2, 60, 8)
    kpm = torch.zeros(2, 60, dtype=torch.float64)
    kpm[1, -4:] = -INF
    attn = torch.classes.ds.SparseAttention(layout, 16)
    out = attn.forward(q, k, v, key_padding_mask=kpm)
    ref = torch.ops.ds.sparse_attention(q, k, v, layout, 16, key_padding_mask=kpm)
    assert rel_err(out, ref) < 1e-14
    g = torch.autograd.grad(out.sum(), (q, k, v))
    g_ref = torch.autograd.grad(ref.sum(), (q, k, v))
    assert all(rel_err(a, b) < 1e-13 for a, b in zip(g, g_ref))
    assert attn.resolve_path(q) == "unfused"  # CPU tensors: the reference path
    # Unidirectional: causal diagonal blocks, as the op with causal_diagonal=True and dense causal.
    tril = torch.ones(2, 4, 4, dtype=torch.long).tril()
    uni = torch.classes.ds.SparseAttention(tril, 16, "auto", True)
    causal = torch.ones(60, 60, dtype=torch.float64).tril()
    assert rel_err(uni.forward(q, k, v), dense_attention(q, k, v, tril, 16, am=causal)) < 1e-12
    assert rel_err(torch.ops.ds.sparse_attention(q, k, v, tril, 16, causal_diagonal=True),
                   dense_attention(q, k, v, tril, 16, am=causal)) < 1e-12
    try:
        torch.classes.ds.SparseAttention(layout, 16, "fused").forward(q, k, v)
    except (RuntimeError, ValueError) as e:
        assert "path 'fused' needs CUDA tensors" in str(e), str(e)[:300]
    else:
        raise AssertionError("the fused path must be refused on CPU tensors")
    mm = torch.classes.ds.BlockSparseMatMul(layout, 16, "sdd", False, True)
    a, b = leaf(2, 2, 64, 8), leaf(2, 2, 64, 8)
    c = mm.forward(a, b)
    assert rel_err(c, torch.ops.ds.blocksparse_matmul(a, b, layout, 16, "sdd", False, True)) == 0
    sm = torch.classes.ds.BlockSparseSoftmax(layout, 16)
    y = sm.forward(c, 0.5, attn_mask=torch.ones(64, 64, dtype=torch.float64), attn_mask_mode="mul")
    assert rel_err(y, torch.ops.ds.blocksparse_softmax(c, layout, 16, 0.5)) < 1e-14


def test_errors():
    layout = torch.ones(4, 2, 2, dtype=torch.long)
    q = torch.randn(1, 2, 32, 16)
    for call, needle in (
        (lambda: torch.ops.ds.sparse_attention(q, q, q, layout, 16), "but the layout has 4"),
        (lambda: torch.ops.ds.sparse_attention(q, q, q[..., :8], layout[:2], 16), "only self-attention"),
        (lambda: torch.ops.ds.blocksparse_matmul(q, q, layout[:2], 16, "xyz"), "Supported modes are: sdd, dsd, dds"),
        (lambda: torch.ops.ds.blocksparse_matmul(q, q.double(), layout[:2], 16, "sdd", False, True),
         "Inputs must be the same dtype; got torch.float32 for A and torch.float64 for B"),
        (lambda: torch.ops.ds.sparse_attention(q, q, q, layout[:2], 24), "block 24 is not supported"),
        (lambda: torch.ops.ds.sparse_attention(q, q, q, layout[:2], 16, attn_mask_mode="max"),
         "attn_mask_mode must be 'add' or 'mul'"),
    ):
        try:
            call()
        except (RuntimeError, ValueError, NotImplementedError) as e:
            assert needle in str(e), (needle, str(e)[:300])
        else:
            raise AssertionError("no error for: " + needle)


def main():
    torch.ops.load_library(sys.argv[1])
    torch.set_num_threads(2)
    failed = 0
    tests = [(n, f) for n, f in sorted(globals().items()) if n.startswith("test_") and callable(f)]
    for name, fn in tests:
        start = time.time()
        try:
            fn()
            print(f"[ OK ] {name} ({time.time() - start:.2f}s)")
        except Exception:  # noqa: BLE001 - report every failure
            failed += 1
            print(f"[FAIL] {name}")
            traceback.print_exc()
    print(f"{len(tests) - failed}/{len(tests)} passed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
