"""Fused block-sparse attention vs the unfused path, FlexAttention and dense SDPA, in one process.

Loads build-gpu/lib/libds_torch.so (DS_TORCH_LIB), builds DeepSpeed layouts with torch.ops.ds.make_layout,
checks every method's output against the fused kernel before timing, then times forward and
forward+backward (median of CUDA-event timings) and prints TFLOP/s counted on present blocks, ratios, and
peak memory. Goals (issue 10, seq >= 4k, fwd+bwd):
  blocks 64/128: >= 1.2x FlexAttention and <= 1.5 x density x dense-SDPA time
  blocks 16/32:  >= 4x FlexAttention and <= 3 x density x dense-SDPA time
  dense layout:  >= 0.75x SDPA
Usage: python3 benchmarks/bench_sparse_attention.py [--quick] [--only REGEX]
"""
import argparse
import json
import math
import os
import re
import sys
import time

import torch
import torch.nn.functional as F

LIB = os.environ.get("DS_TORCH_LIB", "build-gpu/lib/libds_torch.so")
torch.ops.load_library(LIB)

try:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
    flex_compiled = torch.compile(flex_attention, dynamic=False)
except Exception as e:  # noqa: BLE001 - report and go on without Flex
    print(f"FlexAttention unavailable: {e}")
    flex_compiled = None


def layout_json(mode, block, attention="bidirectional", **extra):
    cfg = {"mode": mode, "block": block}
    if mode in ("fixed", "variable", "local_sliding_window"):
        cfg["attention"] = attention
    # DeepSpeed's defaults for each structure (what its users get), except BigBird's random block,
    # which its JSON default (0) would drop.
    if mode == "bigbird":
        cfg.update({"num_random_blocks": 1})
    if mode == "variable":
        cfg.update({"num_random_blocks": 1})
    cfg.update(extra)
    return json.dumps(cfg)


def bench_ms(fn, warmup=3, reps=15):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    times.sort()
    return times[len(times) // 2]


def fwd_bwd(run, q, k, v, do):
    def step():
        out = run(q, k, v)
        torch.autograd.grad(out, (q, k, v), do)
    return step


def peak_mem_mb(fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def rel_err(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


def flex_runner(layout, block, S, causal_diag):
    if flex_compiled is None:
        return None
    lay = layout.cuda().bool()

    def mask_mod(b, h, q_idx, kv_idx):
        ok = lay[h % lay.shape[0], q_idx // block, kv_idx // block]
        if causal_diag:
            ok = ok & ((q_idx // block != kv_idx // block) | (kv_idx <= q_idx))
        return ok

    bm = create_block_mask(mask_mod, None, lay.shape[0] if lay.shape[0] > 1 else None, S, S, device="cuda",
                           BLOCK_SIZE=128, _compile=True)
    return lambda q, k, v: flex_compiled(q, k, v, block_mask=bm)


def run_case(name, mode, block, S, B, H, D, dtype, attention="bidirectional", per_head=False):
    cfg = layout_json(mode, block, attention, different_layout_per_head=per_head) if mode != "dense" else \
        json.dumps({"mode": "dense", "block": block})
    layout = torch.ops.ds.make_layout(cfg, H, S)  # int64 [H, nb, nb]
    density = layout.float().mean().item()
    causal = attention == "unidirectional"
    dev = "cuda"
    q, k, v = [torch.randn(B, H, S, D, device=dev, dtype=dtype, requires_grad=True) for _ in range(3)]
    do = torch.randn(B, H, S, D, device=dev, dtype=dtype)
    fused = torch.classes.ds.SparseAttention(layout, block, "fused", causal)
    unfused = torch.classes.ds.SparseAttention(layout, block, "unfused", causal)
    methods = {"fused": lambda q, k, v: fused.forward(q, k, v)}
    try:
        unfused.forward(q[:, :, :block * 4].detach(), k[:, :, :block * 4].detach(), v[:, :, :block * 4].detach())
        methods["unfused"] = lambda q, k, v: unfused.forward(q, k, v)
    except RuntimeError as e:
        print(f"  unfused path unavailable: {str(e).splitlines()[0]}")
    fl = flex_runner(layout, block, S, causal)
    if fl is not None:
        methods["flex"] = fl
    ref = methods["fused"](q, k, v).detach()
    # Check every method against the fused kernel (itself checked against float64 by the gpu tests).
    for m, fn in methods.items():
        err = rel_err(fn(q, k, v).detach(), ref)
        if not err < 2e-2:
            raise SystemExit(f"{name} {m}: output differs from the fused kernel by {err:.3e}")
    flops = 4.0 * B * H * S * S * D * density
    row = {"case": name, "S": S, "block": block, "density": density}
    for m, fn in methods.items():
        tf = bench_ms(lambda: fn(q, k, v))
        tfb = bench_ms(fwd_bwd(fn, q, k, v, do))
        row[m] = (tf, tfb)
        row[m + "_mem"] = peak_mem_mb(fwd_bwd(fn, q, k, v, do))
    sdpa = lambda q, k, v: F.scaled_dot_product_attention(q, k, v)  # noqa: E731
    row["sdpa"] = (bench_ms(lambda: sdpa(q, k, v)), bench_ms(fwd_bwd(sdpa, q, k, v, do)))
    row["flops"] = flops
    return row


def report(row):
    f, fb = row["fused"]
    s, sb = row["sdpa"]
    line = (f"{row['case']:<34} S{row['S']:<6} blk{row['block']:<4} dens {row['density']:.3f} | fused fwd {f:7.3f} ms "
            f"{row['flops'] / f / 1e9:5.0f} TF/s, f+b {fb:7.3f} ms {3.5 * row['flops'] / fb / 1e9:5.0f} TF/s")
    verdict = []
    if "flex" in row:
        xf, xfb = row["flex"]
        line += f" | flex f+b {xfb:7.3f} ms x{xfb / fb:5.2f}"
        need = 4.0 if row["block"] < 64 else 1.2
        verdict.append(("flex", xfb / fb >= need))
    if "unfused" in row:
        line += f" | unfused f+b {row['unfused'][1]:7.3f} ms x{row['unfused'][1] / fb:5.2f}"
    bound = (3.0 if row["block"] < 64 else 1.5) * row["density"] * sb
    line += f" | sdpa f+b {sb:6.3f} ms, bound {bound:6.3f} ms"
    if row["density"] > 0.999:
        verdict.append(("dense>=0.75sdpa", sb / fb >= 0.75))
    else:
        verdict.append(("density-bound", fb <= bound))
    line += f" | mem fused {row['fused_mem']:.0f} MB" + (f" unfused {row['unfused_mem']:.0f} MB" if "unfused_mem" in row else "")
    if row["S"] >= 4096:
        line += " | " + " ".join(f"{k}:{'met' if ok else 'MISSED'}" for k, ok in verdict)
    print(line, flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", default="")
    args = ap.parse_args()
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}")
    cases = []
    layouts = [("fixed-bi", "fixed", "bidirectional"), ("fixed-uni", "fixed", "unidirectional"),
               ("bigbird", "bigbird", "bidirectional"), ("bslongformer", "bslongformer", "bidirectional"),
               ("variable", "variable", "bidirectional"), ("dense", "dense", "bidirectional")]
    seqs = [4096] if args.quick else [1024, 2048, 4096, 8192, 16384]
    for S in seqs:
        B = max(1, 16384 // S)
        for lname, mode, att in layouts:
            for block in (16, 32, 64, 128):
                if S != 4096 and block not in (16, 64):
                    continue
                cases.append((f"{lname} bf16 16x64", mode, block, S, B, 16, 64, torch.bfloat16, att))
    if not args.quick:
        for block in (16, 64):
            cases.append(("fixed-bi fp16 16x64", "fixed", block, 4096, 4, 16, 64, torch.float16, "bidirectional"))
            cases.append(("fixed-bi bf16 8x128", "fixed", block, 4096, 4, 8, 128, torch.bfloat16, "bidirectional"))
        cases.append(("dense bf16 8x128", "dense", 128, 4096, 4, 8, 128, torch.bfloat16, "bidirectional"))
    for c in cases:
        if args.only and not re.search(args.only, c[0]):
            continue
        t0 = time.time()
        try:
            report(run_case(*c))
        except torch.cuda.OutOfMemoryError as e:
            print(f"{c[0]} S{c[3]} blk{c[2]}: out of memory ({str(e).splitlines()[0]})")
            torch.cuda.empty_cache()
        if time.time() - t0 > 120:
            print("  (slow case)")


if __name__ == "__main__":
    main()
