"""DeepSpeed transformer layer: the fused CUDA path (torch.ops.ds.transformer_layer) against, in the same
process, the same layer in plain PyTorch ops + SDPA (eager), that layer under torch.compile, and this
project's composition of ops/nn functions on the GPU (torch.ops.ds.transformer_layer_composed).

Loads build-gpu/lib/libds_torch.so (env DS_TORCH_LIB). For every configuration (BERT-large: H 1024,
16 heads, I 4096; BERT-base: H 768, 12 heads, I 3072; seq 128 x batch 64 and seq 512 x batch 16; bf16
and fp16; post-LN, and pre-LN for BERT-large) it first checks the results (dropout 0: every method's
output and input/weight gradients against the fused layer's), then times forward+backward with dropout
0.1 (the training setting) and prints ms, TFLOP/s and peak memory. FLOPs per forward:
2*tokens*(4H^2 + 2HI) + 4*B*S^2*H; forward+backward counts 3x that.
Then, for BERT-large bf16 at both lengths, the memory flags: the bytes kept for backward, the peak
memory and the time with each flag; and the largest batch at seq 512 that a stack of --layers layers
fits with all flags vs none (doubling, then bisection).
Goals (issue 12): >= 1.3x eager and >= 1.3x torch.compile (>= 330 TFLOP/s), reaching for 450; all flags:
>= 30% less activation memory at <= 10% more time; largest batch with all flags >= 1.5x without.

torch.compile runs on the BERT-large configurations (each compiles two graphs: dropout 0 for the check,
dropout 0.1 for the timing); --compile-all compiles the BERT-base ones too.

Usage: python3 benchmarks/bench_transformer_layer.py [--quick] [--no-compile] [--compile-all] [--layers N]
                                                      [--dropout P]
"""
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.nn.functional as F

LIB = os.environ.get("DS_TORCH_LIB", "build-gpu/lib/libds_torch.so")
torch.ops.load_library(LIB)
DS = torch.ops.ds.transformer_layer
DS_COMPOSED = torch.ops.ds.transformer_layer_composed
SAVED_BYTES = torch.ops.ds.transformer_saved_bytes
DEV = "cuda"
EPS = 1e-12
FLAGS = ["attn_dropout_checkpoint", "normalize_invertible", "gelu_checkpoint"]


def config_json(h, heads, inter, dtype, pre_ln, p, flags=()):
    cfg = {"hidden_size": h, "heads": heads, "intermediate_size": inter, "attn_dropout_ratio": p,
           "hidden_dropout_ratio": p, "pre_layer_norm": pre_ln, "layer_norm_eps": EPS, "seed": 1,
           "fp16": dtype == torch.float16, "bf16": dtype == torch.bfloat16}
    for f in flags:
        cfg[f] = True
    return json.dumps(cfg)


def make_params(h, inter, dtype):
    """DeepSpeed's parameter list; weights N(0, 0.02), biases and LayerNorm parameters perturbed so a
    missing bias or a swapped LayerNorm shows in the check."""
    w = lambda o, i: torch.randn(o, i, device=DEV) * 0.02
    v = lambda n, c, s: c + s * torch.randn(n, device=DEV)
    p = [w(3 * h, h), v(3 * h, 0, 0.02), w(h, h), v(h, 0, 0.02), v(h, 1, 0.1), v(h, 0, 0.1),
         w(inter, h), v(inter, 0, 0.02), w(h, inter), v(h, 0, 0.02), v(h, 1, 0.1), v(h, 0, 0.1)]
    return [t.to(dtype).requires_grad_() for t in p]


def torch_layer(x, mask, p, heads, pre_ln, attn_p, hidden_p):
    """The same layer in plain PyTorch ops, attention through SDPA (DeepSpeed's dataflow, tanh GELU)."""
    qkvw, qkvb, ow, ob, anw, anb, iw, ib, outw, outb, nw, nb = p
    b, s, h = x.shape
    d = h // heads
    a_in = F.layer_norm(x, (h,), nw, nb, EPS) if pre_ln else x
    q, k, v = F.linear(a_in, qkvw, qkvb).view(b, s, 3, heads, d).permute(2, 0, 3, 1, 4)
    ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=attn_p)
    ctx = ctx.transpose(1, 2).reshape(b, s, h)
    add_res = x + F.dropout(F.linear(ctx, ow, ob), hidden_p)
    ff1 = F.layer_norm(add_res, (h,), anw, anb, EPS)
    ff = F.dropout(F.linear(F.gelu(F.linear(ff1, iw, ib), approximate="tanh"), outw, outb), hidden_p)
    return add_res + ff if pre_ln else F.layer_norm(ff1 + ff, (h,), nw, nb, EPS)


_compiled = {}


def compiled_layer(key):
    if key not in _compiled:
        _compiled[key] = torch.compile(torch_layer, dynamic=False)
    return _compiled[key]


def bench_ms(fn, warmup=5, reps=25):
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


def peak_mb(fn):
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def flops_fwd(b, s, h, inter):
    return 2 * b * s * (4 * h * h + 2 * h * inter) + 4 * b * s * s * h


def rel(a, b):
    a, b = a.float(), b.float()
    return ((a - b).norm() / b.norm().clamp_min(1e-30)).item()


class Config:
    def __init__(self, name, h, heads, inter, s, b, dtype, pre_ln):
        self.name, self.h, self.heads, self.inter, self.s, self.b = name, h, heads, inter, s, b
        self.dtype, self.pre_ln = dtype, pre_ln

    def label(self):
        dt = {torch.bfloat16: "bf16", torch.float16: "fp16"}[self.dtype]
        return f"{self.name} S{self.s} B{self.b} {dt} {'pre' if self.pre_ln else 'post'}-LN"


def methods(c, params, mask, p):
    """name -> callable(x) -> output, each with the same weights and dropout ratio p."""
    cfg = config_json(c.h, c.heads, c.inter, c.dtype, c.pre_ln, p)
    comp = compiled_layer((c.h, c.s, c.b, c.dtype, c.pre_ln, p))
    return {
        "ds fused": lambda x: DS(x, mask, params, cfg, True),
        "eager": lambda x: torch_layer(x, mask, params, c.heads, c.pre_ln, p, p),
        "compile": lambda x: comp(x, mask, params, c.heads, c.pre_ln, p, p),
        "ds composed": lambda x: DS_COMPOSED(x, mask, params, cfg, True),
    }


def fwd_bwd_step(fn, x, params, gy):
    def step():
        out = fn(x)
        torch.autograd.grad(out, [x] + params, gy)
    return step


def check(c, params, x, mask, gy, names):
    """Dropout 0: each method against the fused layer; both in the same dtype, so each within ~10
    unit roundoffs of the exact result (layer_test.cpp's bound): allow 20u between them."""
    u = {torch.bfloat16: 2.0**-8, torch.float16: 2.0**-11}[c.dtype]
    ms = methods(c, params, mask, 0.0)
    ref_out = ms["ds fused"](x)
    ref_grads = torch.autograd.grad(ref_out, [x] + params, gy)
    worst = {}
    for n in names:
        if n == "ds fused":
            continue
        out = ms[n](x)
        grads = torch.autograd.grad(out, [x] + params, gy)
        errs = [rel(out, ref_out)] + [rel(g, r) for g, r in zip(grads, ref_grads)]
        worst[n] = max(errs)
        if worst[n] > 20 * u:
            which = ["output", "input"] + ["param %d" % i for i in range(12)]
            bad = [f"{w} {e:.2e}" for w, e in zip(which, errs) if e > 20 * u]
            raise SystemExit(f"CHECK FAILED {c.label()}: {n} differs from ds fused: {', '.join(bad)}")
    return worst


def run_config(c, args, names, p):
    torch.manual_seed(0)
    params = make_params(c.h, c.inter, c.dtype)
    x = torch.randn(c.b, c.s, c.h, device=DEV, dtype=c.dtype, requires_grad=True)
    mask = torch.zeros(c.b, 1, 1, c.s, device=DEV, dtype=c.dtype)
    mask[1::2, ..., c.s - c.s // 8:] = -10000.0  # BERT padding on every other sequence
    gy = torch.randn(c.b, c.s, c.h, device=DEV, dtype=c.dtype)
    worst = check(c, params, x, mask, gy, names)
    ms = methods(c, params, mask, p)
    fl = 3 * flops_fwd(c.b, c.s, c.h, c.inter)
    rows = {}
    for n in names:
        step = fwd_bwd_step(ms[n], x, params, gy)
        t = bench_ms(step, warmup=args.warmup, reps=args.reps)
        rows[n] = (t, fl / t / 1e9, peak_mb(step))
    base = rows["ds fused"][0]
    for n in names:
        t, tf, mb = rows[n]
        chk = "" if n == "ds fused" else f"{worst[n]:.1e}"
        print(f"| {c.label()} | {n} | {t:.3f} | {tf:.0f} | {mb:.0f} | {t / base:.2f}x | {chk} |")
    sys.stdout.flush()
    return rows


def kept_bytes(fn, x):
    """Bytes a forward leaves allocated (its output plus what autograd keeps), and the layer's own count."""
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    out = fn(x)
    torch.cuda.synchronize()
    kept = torch.cuda.memory_allocated() - before
    counted = SAVED_BYTES(out)
    del out
    return kept, counted


def flag_table(c, args):
    torch.manual_seed(0)
    params = make_params(c.h, c.inter, c.dtype)
    x = torch.randn(c.b, c.s, c.h, device=DEV, dtype=c.dtype, requires_grad=True)
    mask = torch.zeros(c.b, 1, 1, c.s, device=DEV, dtype=c.dtype)
    gy = torch.randn(c.b, c.s, c.h, device=DEV, dtype=c.dtype)
    sets = [("none", ())] + [(f, (f,)) for f in FLAGS] + [("all three", tuple(FLAGS))]
    base = None
    for label, flags in sets:
        cfg = config_json(c.h, c.heads, c.inter, c.dtype, c.pre_ln, 0.1, flags)
        fn = lambda xx, cfg=cfg: DS(xx, mask, params, cfg, True)
        kept, counted = kept_bytes(fn, x)
        step = fwd_bwd_step(fn, x, params, gy)
        t = bench_ms(step, warmup=args.warmup, reps=args.reps)
        pk = peak_mb(step)
        if base is None:
            base = (kept, t, pk)
        print(f"| {c.label()} | {label} | {kept / 2**20:.0f} | {counted / 2**20:.0f} | "
              f"{100 * (1 - kept / base[0]):.0f}% | {pk:.0f} | {t:.3f} | {100 * (t / base[1] - 1):+.1f}% |")
        sys.stdout.flush()


def fits(c, batch, flags, layers, params):
    """One forward+backward of `layers` layers (shared weights) at this batch, or OOM."""
    cfg = config_json(c.h, c.heads, c.inter, c.dtype, c.pre_ln, 0.1, flags)
    x = out = None
    try:
        x = torch.randn(batch, c.s, c.h, device=DEV, dtype=c.dtype, requires_grad=True)
        mask = torch.zeros(batch, 1, 1, c.s, device=DEV, dtype=c.dtype)
        out = x
        for _ in range(layers):
            out = DS(out, mask, params, cfg, True)
        out.float().pow(2).mean().backward()
        torch.cuda.synchronize()
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        del x, out
        for p in params:
            p.grad = None
        torch.cuda.empty_cache()


def largest_batch(c, flags, layers, params, deadline):
    lo, hi = 0, 8
    while fits(c, hi, flags, layers, params):
        lo, hi = hi, hi * 2
        if time.time() > deadline:
            return lo, False
    while hi - lo > max(1, lo // 32) and time.time() < deadline:
        mid = (lo + hi) // 2
        if fits(c, mid, flags, layers, params):
            lo = mid
        else:
            hi = mid
    return lo, hi - lo <= max(1, lo // 32)


def profile(c, p, steps=5):
    """Where the fused layer's forward+backward time goes: CUDA time per kernel (cuBLAS GEMMs and ours)."""
    from torch.profiler import ProfilerActivity, profile as torch_profile
    torch.manual_seed(0)
    params = make_params(c.h, c.inter, c.dtype)
    x = torch.randn(c.b, c.s, c.h, device=DEV, dtype=c.dtype, requires_grad=True)
    mask = torch.zeros(c.b, 1, 1, c.s, device=DEV, dtype=c.dtype)
    gy = torch.randn(c.b, c.s, c.h, device=DEV, dtype=c.dtype)
    step = fwd_bwd_step(methods(c, params, mask, p)["ds fused"], x, params, gy)
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    print(f"\nProfile of ds fused, {c.label()}, dropout {p}: CUDA time per step by kernel")
    rows = []
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None)
        if t is None:
            t = getattr(e, "cuda_time_total", 0)
        if t > 0 and e.count > 0:
            rows.append((t / steps, e.count // steps, e.key))
    rows.sort(reverse=True)
    total = sum(r[0] for r in rows)
    for t, n, key in rows[:30]:
        print(f"  {t:8.1f} us  x{n:<3d} {key[:110]}")
    print(f"  {total:8.1f} us  total")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="BERT-large bf16 only")
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    ap.add_argument("--compile-all", action="store_true", help="torch.compile the BERT-base layers too")
    ap.add_argument("--dropout", type=float, default=0.1, help="dropout ratio of the timed runs")
    ap.add_argument("--no-profile", action="store_true", help="skip the per-kernel profile")
    ap.add_argument("--layers", type=int, default=24, help="layers in the largest-batch search")
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--reps", type=int, default=25)
    args = ap.parse_args()
    t0 = time.time()
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}")
    with_compile = ["ds fused", "eager"] + ([] if args.no_compile else ["compile"]) + ["ds composed"]
    without = ["ds fused", "eager", "ds composed"]
    large = ("BERT-large", 1024, 16, 4096)
    base = ("BERT-base", 768, 12, 3072)
    configs = []
    for dtype in (torch.bfloat16, torch.float16):
        for model in (large, base):
            for s, b in ((128, 64), (512, 16)):
                if args.quick and (model is base or dtype != torch.bfloat16):
                    continue
                configs.append(Config(*model, s, b, dtype, pre_ln=False))
                if model is large and dtype == torch.bfloat16:
                    configs.append(Config(*model, s, b, dtype, pre_ln=True))

    print(f"\nForward+backward, dropout {args.dropout} (checked first at dropout 0 against ds fused: largest "
          "relative error over the output and all 13 gradients in the last column)")
    print("| config | method | ms | TFLOP/s | peak MiB | time vs ds fused | check |")
    print("|---|---|---|---|---|---|---|")
    summary = []
    for c in configs:
        names = with_compile if (c.name == "BERT-large" or args.compile_all) else without
        rows = run_config(c, args, names, args.dropout)
        summary.append((c, rows))

    print("\nSpeed-up of ds fused (goal >= 1.3x eager and torch.compile, >= 330 TFLOP/s):")
    for c, rows in summary:
        t = rows["ds fused"][0]
        parts = [f"{rows['ds fused'][1]:.0f} TFLOP/s", f"{rows['eager'][0] / t:.2f}x eager"]
        if "compile" in rows:
            parts.append(f"{rows['compile'][0] / t:.2f}x compile")
        parts.append(f"{rows['ds composed'][0] / t:.2f}x composed")
        print(f"  {c.label()}: " + ", ".join(parts))

    print("\nMemory flags (ds fused, dropout 0.1): kept = bytes a forward leaves allocated (output + saved), "
          "counted = the layer's own saved-bytes report")
    print("| config | flags | kept MiB | counted MiB | kept saved | peak MiB fwd+bwd | ms | time |")
    print("|---|---|---|---|---|---|---|---|")
    for s, b in ((128, 64), (512, 16)):
        flag_table(Config(*large, s, b, torch.bfloat16, pre_ln=True), args)

    print(f"\nLargest batch at seq 512, {args.layers} BERT-large layers (bf16, pre-LN, dropout 0.1), "
          "forward+backward:")
    c = Config(*large, 512, 0, torch.bfloat16, pre_ln=True)
    torch.manual_seed(0)
    params = make_params(c.h, c.inter, c.dtype)
    deadline = time.time() + 60
    b_none, exact_none = largest_batch(c, (), args.layers, params, deadline)
    deadline = time.time() + 60
    b_all, exact_all = largest_batch(c, tuple(FLAGS), args.layers, params, deadline)
    note = lambda exact: "" if exact else " (search cut by its time bound: a lower bound)"
    print(f"  no flags: {b_none}{note(exact_none)}; all flags: {b_all}{note(exact_all)}; "
          f"ratio {b_all / max(b_none, 1):.2f}x (goal >= 1.5x)")
    if not args.no_profile:
        for s, b in ((128, 64), (512, 16)):
            profile(Config(*large, s, b, torch.bfloat16, pre_ln=False), args.dropout)
    print(f"\ntotal {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
