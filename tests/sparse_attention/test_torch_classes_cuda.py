"""torch.classes.ds.* on CUDA (label gpu): the classes the benchmarks use, fused and unfused paths
against the CPU float64 path of the same class, and the MatMul class against its CPU result.

Usage: python3 test_torch_classes_cuda.py path/to/libds_torch.so   (exit 77 = skipped: no CUDA)
"""
import sys
import traceback

import torch

BF16_U = 2.0 ** -8


def rel_err(a, b):
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    return ((a - b).norm() / b.norm().clamp_min(1e-300)).item()


def test_sparse_attention_class_paths():
    torch.manual_seed(1)
    layout = torch.ops.ds.make_layout('{"mode": "bigbird", "block": 32, "num_random_blocks": 1}', 4, 256)
    q, k, v = (torch.randn(2, 4, 250, 64, dtype=torch.bfloat16, device="cuda", requires_grad=True) for _ in range(3))
    results = {}
    for path in ("fused", "unfused"):
        obj = torch.classes.ds.SparseAttention(layout, 32, path)
        assert obj.resolve_path(q) == path
        out = obj.forward(q, k, v)
        results[path] = (out, torch.autograd.grad(out.float().sum(), (q, k, v)))
    assert torch.classes.ds.SparseAttention(layout, 32).resolve_path(q) == "fused"
    ref_obj = torch.classes.ds.SparseAttention(layout, 32)
    q64, k64, v64 = (x.detach().double().cpu().requires_grad_() for x in (q, k, v))
    ref = ref_obj.forward(q64, k64, v64)
    g_ref = torch.autograd.grad(ref.sum(), (q64, k64, v64))
    # Fused: ~4u forward, ~8u gradients; unfused materializes scores and probabilities: twice that.
    for path, (out, g) in results.items():
        f = 1 if path == "fused" else 2
        assert rel_err(out, ref) < 4 * f * BF16_U, (path, rel_err(out, ref))
        for name, a, b in zip("qkv", g, g_ref):
            assert rel_err(a, b) < 8 * f * BF16_U, (path, name, rel_err(a, b))


def test_matmul_and_softmax_classes_on_cuda():
    torch.manual_seed(2)
    layout = (torch.rand(2, 8, 8) < 0.4).long()
    mm = torch.classes.ds.BlockSparseMatMul(layout, 16, "sdd", False, True)
    sm = torch.classes.ds.BlockSparseSoftmax(layout, 16)
    dsd = torch.classes.ds.BlockSparseMatMul(layout, 16, "dsd")
    a, b = (torch.randn(3, 2, 128, 64, dtype=torch.float16, device="cuda") for _ in range(2))
    y = dsd.forward(sm.forward(mm.forward(a, b), 0.125), b)
    a64, b64 = a.double().cpu(), b.double().cpu()
    y_ref = dsd.forward(sm.forward(mm.forward(a64, b64), 0.125), b64)
    assert y.is_cuda and y.dtype == torch.float16
    assert rel_err(y, y_ref) < 16 * 2.0 ** -11, rel_err(y, y_ref)


def main():
    torch.ops.load_library(sys.argv[1])
    if not torch.cuda.is_available():
        print("SKIP: no CUDA device")
        sys.exit(77)
    failed = 0
    tests = [(n, f) for n, f in sorted(globals().items()) if n.startswith("test_") and callable(f)]
    for name, fn in tests:
        try:
            fn()
            print(f"[ OK ] {name}")
        except Exception:  # noqa: BLE001 - report every failure
            failed += 1
            print(f"[FAIL] {name}")
            traceback.print_exc()
    print(f"{len(tests) - failed}/{len(tests)} passed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
