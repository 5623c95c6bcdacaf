#!/usr/bin/env python3
"""The PyTorch reference of benchmarks/bench_bert_pretrain.sh: HuggingFace BertForPreTraining
(post-LN BERT, SDPA attention, MLM + NSP loss) trained with torch.optim.AdamW(fused=True) and
gradient clipping 1.0, in eager mode and under torch.compile, at the shapes bert_pretrain runs.

Each row trains a fresh model for WARMUP + STEPS optimizer steps on one batch stream and prints one
line `BENCH_ROW {json}` (name, ok, samples/s, TFLOP/s, losses, note) for the shell script's table.
A row is ok when every loss is finite and the loss fell (mean of the last 5 steps --min_drop below
the mean of the first 3). TFLOP/s uses bert_pretrain's formula (forward FLOPs x 3, the MLM head counted at the
masked positions only), so the two columns compare the same work; HuggingFace's head computes the
logits at all positions, which that count leaves out.

Batches: the first instances of bert_pretrain's own training shard when h5py is importable (NVIDIA
shard format, labels built as bing_bert does), else synthetic instances with the shard's statistics
(Zipf-distributed token ids so that the loss can fall, 10% padded short sequences, 15% masked up to
max_predictions, NSP labels 50/50).

Rows (--rows, comma separated) are SIZE:PRECISION:MODE with SIZE tiny|base|large, PRECISION
autocast (fp32 weights and AdamW state, bf16 autocast: what bert_pretrain's bf16 with fp32 master
weights does) or bf16 (bf16 weights and AdamW state), MODE eager|compile.
"""
import argparse
import gc
import json
import math
import os
import sys
import time

SIZES = {
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_hidden_layers=24, num_attention_heads=16, intermediate_size=4096),
}
VOCAB = 30528  # bert-base-uncased's 30522 padded to a multiple of 8, as bert_pretrain pads it


def row_out(name, ok, note, **kw):
    d = dict(name=name, ok=ok, note=note)
    d.update(kw)
    print("BENCH_ROW " + json.dumps(d), flush=True)


def forward_flops_per_sequence(size, seq, masked):
    """bert_pretrain's count (examples/bing_bert/model/bert_model.cpp), multiply-add = 2."""
    s = SIZES[size]
    H, I, L, V, S = s["hidden_size"], s["intermediate_size"], s["num_hidden_layers"], VOCAB, seq
    return L * (2 * S * (4 * H * H + 2 * H * I) + 4 * S * S * H) + 2 * masked * (H * H + H * V) + 2 * (H * H + 2 * H)


def shard_batches(torch, path, n, seq, max_pred):
    import h5py  # noqa: F401  (ImportError -> synthetic batches)
    import numpy as np
    with h5py.File(path, "r") as f:
        have = f["input_ids"].shape[0]
        if have < n:
            raise ValueError(f"{path}: {have} instances, {n} needed")
        if f["input_ids"].shape[1] != seq or f["masked_lm_positions"].shape[1] != max_pred:
            raise ValueError(f"{path}: input_ids {f['input_ids'].shape}, masked_lm_positions "
                             f"{f['masked_lm_positions'].shape}; expected seq {seq}, max_pred {max_pred}")
        ids = np.asarray(f["input_ids"][:n], dtype=np.int64)
        mask = np.asarray(f["input_mask"][:n], dtype=np.int64)
        seg = np.asarray(f["segment_ids"][:n], dtype=np.int64)
        pos = np.asarray(f["masked_lm_positions"][:n], dtype=np.int64)
        lm_ids = np.asarray(f["masked_lm_ids"][:n], dtype=np.int64)
        nsp = np.asarray(f["next_sentence_labels"][:n], dtype=np.int64).reshape(n)
    labels = np.full((n, seq), -100, dtype=np.int64)
    for r in range(n):
        # bing_bert: the positions before the first 0 are the masked ones ([CLS] is never masked).
        zeros = np.nonzero(pos[r] == 0)[0]
        k = int(zeros[0]) if len(zeros) else max_pred
        labels[r, pos[r, :k]] = lm_ids[r, :k]
    t = lambda a: torch.from_numpy(a)  # noqa: E731
    return t(ids), t(mask), t(seg), t(labels), t(nsp), f"shard {os.path.basename(path)}"


def synthetic_batches(torch, n, seq, max_pred, seed):
    g = torch.Generator().manual_seed(seed)
    # Zipf-like ids over the word pieces (ids >= 1000 in bert-base-uncased's vocabulary).
    weights = 1.0 / (torch.arange(1, VOCAB - 1000 + 1, dtype=torch.float64) + 10.0)
    ids = 1000 + torch.multinomial(weights.float(), n * seq, replacement=True, generator=g).view(n, seq)
    lengths = torch.full((n,), seq, dtype=torch.long)
    short = torch.rand(n, generator=g) < 0.1
    lengths[short] = torch.randint(8, seq, (int(short.sum()),), generator=g)
    pos = torch.arange(seq).expand(n, seq)
    mask = (pos < lengths[:, None]).long()
    ids = ids * mask
    ids[:, 0] = 101  # [CLS]
    ids[torch.arange(n), lengths - 1] = 102  # [SEP]
    seg = ((pos >= lengths[:, None] // 2) & (mask == 1)).long()
    labels = torch.full((n, seq), -100, dtype=torch.long)
    for r in range(n):
        L = int(lengths[r])
        k = min(max_pred, max(1, round(0.15 * (L - 2))))
        p = 1 + torch.randperm(L - 2, generator=g)[:k]
        labels[r, p] = ids[r, p]
        ids[r, p] = 103  # [MASK]
    nsp = torch.randint(0, 2, (n,), generator=g)
    return ids, mask, seg, labels, nsp, "synthetic (no h5py)"


def build_model(torch, transformers, size, device):
    cfg_kw = dict(vocab_size=VOCAB, max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu",
                  hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, **SIZES[size])
    try:
        cfg = transformers.BertConfig(attn_implementation="sdpa", **cfg_kw)
    except TypeError:
        cfg = transformers.BertConfig(**cfg_kw)
        cfg._attn_implementation = "sdpa"
    try:
        with torch.device(device):  # initialised on the GPU: seconds, not a minute on the CPU
            model = transformers.BertForPreTraining(cfg)
    except (AttributeError, TypeError):  # torch < 2.0: torch.device is no context manager
        model = transformers.BertForPreTraining(cfg)
    model.to(device)
    attn = getattr(model.config, "_attn_implementation", None)
    if attn != "sdpa" and hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("sdpa")
        attn = getattr(model.config, "_attn_implementation", None)
    return model, attn


def run_row(torch, transformers, spec, a, data, deadline):
    parts = spec.split(":")
    if len(parts) != 3 or parts[0] not in SIZES or parts[1] not in ("autocast", "bf16") or \
            parts[2] not in ("eager", "compile"):
        row_out(spec, False, f"bad row spec '{spec}' (expected SIZE:PRECISION:MODE, e.g. large:autocast:eager)")
        return False
    size, precision, mode = parts
    name = f"HF BertForPreTraining {size}, {'bf16 autocast' if precision == 'autocast' else 'bf16 weights'}, {mode}"
    if mode == "compile" and not hasattr(torch, "compile"):
        row_out(name, None, f"skipped: torch {torch.__version__} has no torch.compile")
        return True
    left = deadline - time.time()
    need = a.compile_seconds if mode == "compile" else 20
    if left < need:
        row_out(name, None, f"skipped: {left:.0f} s left in the budget, this row needs about {need:.0f} s")
        return True
    dev = torch.device(a.device)
    torch.manual_seed(a.seed)
    model, attn = build_model(torch, transformers, size, dev)
    if precision == "bf16":
        model.to(torch.bfloat16)
    model.train()
    notes = [f"attn={attn}"]
    params = [p for p in model.parameters() if p.requires_grad]
    try:
        opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.01, fused=True)
        notes.append("fused AdamW")
    except (TypeError, RuntimeError) as e:  # torch < 2.0, or a device without the fused kernel
        opt = torch.optim.AdamW(params, lr=a.lr, weight_decay=0.01)
        notes.append(f"unfused AdamW ({type(e).__name__})")
    step_model = torch.compile(model, dynamic=False) if mode == "compile" else model
    micro = a.micro
    total = a.warmup + a.steps
    # Each step's batch in its own tensors, on the device before the clock starts (as bert_pretrain
    # copies its batch each step, the copy is small: 5 int64 tensors of [64, 128]).
    batches = [[t[i * micro:(i + 1) * micro].clone().to(dev) for t in data[:5]] for i in range(total)]
    masked = data[3][:total * micro].ne(-100).sum(dim=1).double()
    losses, times = [], []
    t_first = time.time()
    warm_s = 0.0

    def one_step(i):
        ids, mask, seg, labels, nsp = batches[i]
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=precision == "autocast"):
            out = step_model(input_ids=ids, attention_mask=mask, token_type_ids=seg, labels=labels,
                             next_sentence_label=nsp)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss.item()  # one host sync per step, as bert_pretrain has

    for i in range(total):
        t0 = time.perf_counter()
        losses.append(one_step(i))
        times.append(time.perf_counter() - t0)
        if i + 1 == a.warmup:
            warm_s = time.time() - t_first
        if time.time() > deadline:
            row_out(name, None, f"skipped: out of budget after {i + 1} of {total} steps")
            return True
    timed = times[a.warmup:]
    secs = sum(timed)
    samples = micro * a.steps
    flops = 3.0 * sum(forward_flops_per_sequence(size, a.seq, float(m)) for m in masked[a.warmup * micro:])
    finite = all(math.isfinite(x) for x in losses)
    first, last = sum(losses[:3]) / 3, sum(losses[-5:]) / 5
    ok = finite and last < first - a.min_drop
    notes.append(f"warm-up {warm_s:.1f} s")
    if not ok:
        notes.append("CHECK FAILED: " + ("non-finite loss" if not finite else "loss did not fall"))
    row_out(name, ok, ", ".join(notes), samples_per_s=samples / secs, tflops=flops / secs / 1e12, loss_first=first,
            loss_last=last, step_ms=1e3 * secs / a.steps, steps=a.steps, size=size, mode=mode, precision=precision)
    return ok


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", default="large:autocast:eager,large:bf16:eager,large:autocast:compile")
    p.add_argument("--shard", default="", help="bert_prep training shard to take the batches from (needs h5py)")
    p.add_argument("--micro", type=int, default=64)
    p.add_argument("--seq", type=int, default=128)
    p.add_argument("--max_pred", type=int, default=20)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--min_drop", type=float, default=0.05, help="the loss check: mean of the last 5 steps at least "
                   "this much below the mean of the first 3")
    p.add_argument("--device", default="cuda")
    p.add_argument("--budget", type=float, default=240, help="seconds for all rows; rows that do not fit are skipped")
    p.add_argument("--compile_seconds", type=float, default=120, help="what a compile row needs at least")
    a = p.parse_args()
    deadline = time.time() + a.budget
    rows = [r for r in a.rows.split(",") if r]
    try:
        import torch
    except ImportError as e:
        for r in rows:
            row_out(r, None, f"skipped: import torch failed ({e})")
        return 0
    try:
        import transformers
    except ImportError as e:
        for r in rows:
            row_out(r, None, f"skipped: import transformers failed ({e})")
        return 0
    if a.device.startswith("cuda") and not torch.cuda.is_available():
        for r in rows:
            row_out(r, None, "skipped: no CUDA device for the HuggingFace rows")
        return 0
    if a.device.startswith("cuda"):
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    n = a.micro * (a.warmup + a.steps)
    data = None
    if a.shard:
        try:
            data = shard_batches(torch, a.shard, n, a.seq, a.max_pred)
        except ImportError:
            data = None
    if data is None:
        data = synthetic_batches(torch, n, a.seq, a.max_pred, a.seed)
    print(f"hf_bert_reference: torch {torch.__version__}, transformers {transformers.__version__}, batches from {data[5]}, "
          f"{n} instances, mean {data[3].ne(-100).sum().item() / n:.1f} masked per sequence", flush=True)
    all_ok = True
    for r in rows:
        try:
            all_ok &= run_row(torch, transformers, r, a, data, deadline)
        except Exception as e:  # a failing reference row is reported, and the rows after it still run
            row_out(r, False, f"error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300])
            all_ok = False
        gc.collect()  # the row's model, optimizer and compiled graphs go before the next row's
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
