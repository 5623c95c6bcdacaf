"""torch.ops.ds.nm_sparse_attention from Python (Debian's torch matches the LibTorch we build against):
forward and backward against a float64 PyTorch implementation of the DFSS semantics."""
import math
import sys

import torch

torch.ops.load_library(sys.argv[1])


def reference(q, k, v, n, m, causal=False, kp=None):
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if kp is not None:
        s = s + kp[:, None, None, :]
    if causal:
        S = q.shape[2]
        s = s.masked_fill(torch.ones(S, S, dtype=torch.bool).triu(1), float("-inf"))
    S = s.shape[-1]
    pad = (-S) % m
    sp = torch.nn.functional.pad(s.detach(), (0, pad), value=float("-inf"))
    g = sp.reshape(*sp.shape[:-1], -1, m)
    idx = torch.arange(m)
    beats = (g.unsqueeze(-2) > g.unsqueeze(-1)) | ((g.unsqueeze(-2) == g.unsqueeze(-1)) & (idx[None, :] < idx[:, None]))
    keep = (beats.sum(-1) < n).reshape(sp.shape)[..., :S]
    s = s.masked_fill(~keep, float("-inf"))
    empty = s.amax(-1, keepdim=True) == float("-inf")
    p = torch.softmax(s.masked_fill(empty, 0.0), -1).masked_fill(empty, 0.0)
    return p @ v


failures = 0
torch.manual_seed(0)
for (n, m, causal, S) in [(2, 4, False, 13), (1, 2, True, 10), (2, 4, True, 16)]:
    q, k, v = [torch.randn(2, 3, S, 8, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    kp = torch.randn(2, S, dtype=torch.float64)
    out = torch.ops.ds.nm_sparse_attention(q, k, v, n, m, None, kp, None, "add", "mul", causal)
    ref = reference(q, k, v, n, m, causal, kp)
    g = torch.randn_like(out)
    got_grads = torch.autograd.grad(out, (q, k, v), g)
    ref_grads = torch.autograd.grad(ref, (q, k, v), g)
    errs = [(out - ref).abs().max().item()] + [(a - b).abs().max().item() for a, b in zip(got_grads, ref_grads)]
    ok = all(e < 1e-12 for e in errs)
    failures += not ok
    print(f"{'ok  ' if ok else 'FAIL'} {n}:{m} causal={causal} S={S} max errors {['%.1e' % e for e in errs]}")
try:
    torch.ops.ds.nm_sparse_attention(q, k, v, 3, 4)
    print("FAIL 3:4 accepted")
    failures += 1
except (RuntimeError, ValueError) as e:
    print("ok   3:4 rejected:", str(e).splitlines()[0])
sys.exit(1 if failures else 0)
