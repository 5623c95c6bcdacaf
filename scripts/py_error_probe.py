# Raises each error case of our torch ops through Python, one case per process, and reports how
# each process ended. On the GPU machine an error raised into Python once crashed three Python tests
# (a private static libstdc++ in libds_torch.so, whose iostreams were never initialised, crashed in
# c10::str; fixed in cmake/DsOptions.cmake). This probe and scripts/py_error_diag.sh found it.
#   python3 scripts/py_error_probe.py LIB               all cases, each in its own process
#   python3 scripts/py_error_probe.py LIB --case I [--handler crash_handler.so]
import faulthandler, json, os, subprocess, sys
import torch

CASES = [
    "heads mismatch", "value head size", "bad matmul mode", "matmul dtype", "block 24", "mask mode",
    "nm 3:4", "transformer heads", "transformer unknown key", "transformer eval backward",
]


def run_case(name):
    q = torch.randn(1, 2, 32, 16)
    layout = torch.ones(4, 2, 2, dtype=torch.long)
    ds = torch.ops.ds
    if name == "heads mismatch":
        ds.sparse_attention(q, q, q, layout, 16)
    elif name == "value head size":
        ds.sparse_attention(q, q, q[..., :8], layout[:2], 16)
    elif name == "bad matmul mode":
        ds.blocksparse_matmul(q, q, layout[:2], 16, "xyz")
    elif name == "matmul dtype":
        ds.blocksparse_matmul(q, q.double(), layout[:2], 16, "sdd", False, True)
    elif name == "block 24":
        ds.sparse_attention(q, q, q, layout[:2], 24)
    elif name == "mask mode":
        ds.sparse_attention(q, q, q, layout[:2], 16, attn_mask_mode="max")
    elif name == "nm 3:4":
        ds.nm_sparse_attention(q, q, q, 3, 4)
    else:
        h = 16
        params = [torch.randn(3 * h, h), torch.randn(3 * h), torch.randn(h, h), torch.randn(h), torch.ones(h),
                  torch.zeros(h), torch.randn(4 * h, h), torch.randn(4 * h), torch.randn(h, 4 * h), torch.randn(h),
                  torch.ones(h), torch.zeros(h)]
        x = torch.randn(1, 4, h)
        cfg = {"hidden_size": h, "heads": 2, "attn_dropout_ratio": 0.0, "hidden_dropout_ratio": 0.0}
        if name == "transformer heads":
            cfg["heads"] = 3
        elif name == "transformer unknown key":
            cfg["hiden_size"] = 4
        else:
            x.requires_grad_()
        out = ds.transformer_layer(x, torch.empty(0), params, json.dumps(cfg), name != "transformer eval backward")
        if name == "transformer eval backward":
            out.sum().backward()


def main():
    lib = sys.argv[1]
    if "--case" not in sys.argv:
        for i, name in enumerate(CASES):
            r = subprocess.run([sys.executable, __file__] + sys.argv[1:] + ["--case", str(i)],
                               capture_output=True, text=True)
            print(f"== case {i} ({name}): exit {r.returncode}", flush=True)
            for line in (r.stdout + r.stderr).strip().splitlines()[:40]:
                print("   " + line)
        return
    faulthandler.enable()
    if "--handler" in sys.argv:  # our SIGSEGV handler (pc, caller, backtrace) replaces faulthandler's
        import ctypes
        ctypes.CDLL(sys.argv[sys.argv.index("--handler") + 1])
    torch.ops.load_library(lib)
    name = CASES[int(sys.argv[sys.argv.index("--case") + 1])]
    try:
        run_case(name)
        print("no error raised")
    except BaseException as e:  # noqa: B902 - the probe reports whatever arrives
        print("caught", type(e).__name__, str(e).splitlines()[0][:150])


if __name__ == "__main__":
    main()
