# Raises each error case of the sparse-attention ops through Python, one by one, with faulthandler on:
# on the GPU machine (torch 2.11) an error raised into Python crashed three Python tests.
#   python3 scripts/py_error_probe.py build-gpu/lib/libds_torch.so
import faulthandler, sys, torch
faulthandler.enable()
torch.ops.load_library(sys.argv[1])
q = torch.randn(1, 2, 32, 16); layout = torch.ones(4, 2, 2, dtype=torch.long)
cases = [
 ("heads mismatch (TORCH_CHECK_VALUE?)", lambda: torch.ops.ds.sparse_attention(q, q, q, layout, 16)),
 ("self-attention only", lambda: torch.ops.ds.sparse_attention(q, q, q[..., :8], layout[:2], 16)),
 ("bad mode", lambda: torch.ops.ds.blocksparse_matmul(q, q, layout[:2], 16, "xyz")),
 ("dtype", lambda: torch.ops.ds.blocksparse_matmul(q, q.double(), layout[:2], 16, "sdd", False, True)),
 ("block 24", lambda: torch.ops.ds.sparse_attention(q, q, q, layout[:2], 24)),
 ("mask mode", lambda: torch.ops.ds.sparse_attention(q, q, q, layout[:2], 16, attn_mask_mode="max")),
]
for name, f in cases:
    print("==", name, flush=True)
    try:
        f(); print("   no error", flush=True)
    except BaseException as e:
        print("   caught", type(e).__name__, str(e).splitlines()[0][:150], flush=True)
print("probe done", flush=True)
