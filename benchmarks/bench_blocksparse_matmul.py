"""Block-sparse MatMul (sdd, dsd) against dense cuBLAS (torch.matmul) of the same shape, in one process.

Loads build-gpu/lib/libds_torch.so (DS_TORCH_LIB) and uses torch.classes.ds.BlockSparseMatMul (the
layout's tables built once). Shapes of sparse attention, the ops' main use: batch Z, H heads, sequence
S, head size D (default 4 x 16 x 4096 x 64):
  sdd: q k^T on the layout's blocks   [Z, H, S, D] x [Z, H, S, D]^T -> [Z, nnz, b, b]
  dsd: P v                            [Z, nnz, b, b] x [Z, H, S, D] -> [Z, H, S, D]
and the dense references torch.matmul(q, k^T) -> [Z, H, S, S] and torch.matmul(P_dense, v).
Random layouts (one for all heads, as DeepSpeed's default) at densities 0.1 / 0.25 / 0.5, blocks
16 / 32 / 64 / 128, bf16 and fp16. Every result is checked against the dense product before it is timed.
Prints TFLOP/s counted on the present blocks only and the ratio to the dense throughput measured in the
same run. Goals (issue 9): >= 0.60 of dense per present block at blocks >= 64, >= 0.35 at block 16.
Usage: python3 benchmarks/bench_blocksparse_matmul.py [--batch 4] [--heads 16] [--seq 4096] [--dim 64]
"""
import argparse
import os
import sys
import time

import torch

LIB = os.environ.get("DS_TORCH_LIB", "build-gpu/lib/libds_torch.so")
torch.ops.load_library(LIB)


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


def tile_index(layout, nb):
    """Index of each present block in the [H * nb * nb] grid of tiles, in layout.nonzero() order."""
    h, r, c = layout.nonzero(as_tuple=True)
    return (h * nb + r) * nb + c


def gather_blocks(dense, idx, block):
    """[Z, H, S, S] -> the present blocks [Z, nnz, b, b]."""
    z, h, s, _ = dense.shape
    nb = s // block
    tiles = dense.view(z, h, nb, block, nb, block).permute(0, 1, 2, 4, 3, 5).reshape(z, h * nb * nb, block, block)
    return tiles.index_select(1, idx)


def scatter_blocks(sparse, idx, heads, s, block):
    """[Z, nnz, b, b] -> [Z, H, S, S] with zeros outside the layout."""
    z = sparse.shape[0]
    nb = s // block
    tiles = sparse.new_zeros(z, heads * nb * nb, block, block).index_copy_(1, idx, sparse)
    return tiles.view(z, heads, nb, nb, block, block).permute(0, 1, 2, 4, 3, 5).reshape(z, heads, s, s)


def rel_err(a, b):
    num = den = 0.0
    for x, y in zip(a.flatten().split(1 << 24), b.flatten().split(1 << 24)):
        x, y = x.float(), y.float()
        num += (x - y).pow(2).sum().item()
        den += y.pow(2).sum().item()
    return (num / max(den, 1e-30)) ** 0.5


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--heads", type=int, default=16)
    ap.add_argument("--seq", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=64)
    args = ap.parse_args()
    Z, H, S, D = args.batch, args.heads, args.seq, args.dim
    print(f"device {torch.cuda.get_device_name()}, torch {torch.__version__}; Z{Z} H{H} S{S} D{D}")
    dense_flops = 2.0 * Z * H * S * S * D
    goals = {16: 0.35, 64: 0.60, 128: 0.60}
    verdicts = []
    t_start = time.time()
    for dtype in (torch.bfloat16, torch.float16):
        # Unit roundoff of the output: the sparse and dense results are each within a few u of exact.
        tol = 8 * (2.0 ** -8 if dtype == torch.bfloat16 else 2.0 ** -11)
        torch.manual_seed(0)
        q = torch.randn(Z, H, S, D, device="cuda", dtype=dtype)
        k = torch.randn_like(q)
        v = torch.randn_like(q)
        scores = torch.matmul(q, k.transpose(-1, -2))
        t_dense_sdd = bench_ms(lambda: torch.matmul(q, k.transpose(-1, -2)))
        p_dense = torch.rand(Z, H, S, S, device="cuda", dtype=dtype)
        t_dense_dsd = bench_ms(lambda: torch.matmul(p_dense, v))
        del p_dense
        tf_dense_sdd = dense_flops / t_dense_sdd / 1e9
        tf_dense_dsd = dense_flops / t_dense_dsd / 1e9
        name = str(dtype).replace("torch.", "")
        print(f"{name} dense torch.matmul: q k^T {t_dense_sdd:.3f} ms {tf_dense_sdd:.0f} TF/s | "
              f"P v {t_dense_dsd:.3f} ms {tf_dense_dsd:.0f} TF/s")
        for block in (16, 32, 64, 128):
            nb = S // block
            for density in (0.1, 0.25, 0.5):
                g = torch.Generator().manual_seed(block * 1000 + int(density * 100))
                layout = (torch.rand(nb, nb, generator=g) < density).long()
                layout = layout.unsqueeze(0).expand(H, nb, nb).contiguous()
                nnz = int(layout.sum())
                idx = tile_index(layout, nb).cuda()
                sdd = torch.classes.ds.BlockSparseMatMul(layout, block, "sdd", False, True)
                dsd = torch.classes.ds.BlockSparseMatMul(layout, block, "dsd", False, False)
                # Check, then time.
                c = sdd.forward(q, k)
                err_sdd = rel_err(c, gather_blocks(scores, idx, block))
                p = torch.rand(Z, nnz, block, block, device="cuda", dtype=dtype)
                o = dsd.forward(p, v)
                err_dsd = rel_err(o, torch.matmul(scatter_blocks(p, idx, H, S, block), v))
                if not (err_sdd < tol and err_dsd < tol):
                    sys.exit(f"{name} block {block} density {density}: results differ from dense "
                             f"(sdd {err_sdd:.2e}, dsd {err_dsd:.2e}, tolerance {tol:.1e})")
                t_sdd = bench_ms(lambda: sdd.forward(q, k))
                t_dsd = bench_ms(lambda: dsd.forward(p, v))
                flops = 2.0 * Z * nnz * block * block * D
                r_sdd = flops / t_sdd / 1e9 / tf_dense_sdd
                r_dsd = flops / t_dsd / 1e9 / tf_dense_dsd
                goal = goals.get(block)
                mark = ""
                if goal is not None:
                    ok = r_sdd >= goal and r_dsd >= goal
                    verdicts.append(ok)
                    mark = f" | goal >= {goal:.2f}: {'met' if ok else 'MISSED'}"
                real_density = nnz / (H * nb * nb)
                print(f"{name} blk{block:<4} density {real_density:.3f} | sdd {t_sdd:7.3f} ms "
                      f"{flops / t_sdd / 1e9:5.0f} TF/s x{r_sdd:4.2f} of dense | dsd {t_dsd:7.3f} ms "
                      f"{flops / t_dsd / 1e9:5.0f} TF/s x{r_dsd:4.2f} of dense | err {max(err_sdd, err_dsd):.1e}{mark}",
                      flush=True)
                del c, p, o
        del scores
        torch.cuda.empty_cache()
    print(f"goals met: {sum(verdicts)}/{len(verdicts)} rows; total {time.time() - t_start:.0f} s")


if __name__ == "__main__":
    main()
