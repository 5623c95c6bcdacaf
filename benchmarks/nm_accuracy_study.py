#!/usr/bin/env python3
"""How well dynamic N:M attention (1:2, 2:4) approximates dense attention on real BERT activations.

The DFSS paper (Chen et al., PPoPP'23) argues that keeping the N largest scores of every M
consecutive keys keeps most of the attention. This measures it on the recipe's own model:

  * the weights come from a bing_bert checkpoint written by build/bin/bert_pretrain
    (OUTPUT_DIR/saved_models/JOB/TAG/mp_rank_00_model_states.pt; torch.load(...)["module"]);
  * the inputs are real pre-training instances (data/shards/seq128/*.hdf5, read with h5py), with
    their [MASK] tokens and padding, as the model sees them in training;
  * the whole pre-LN encoder runs in plain torch from the checkpoint's tensors (the structure of
    examples/bing_bert/model/bert_layers.cpp: embeddings -> LayerNorm; per layer
    x + attn(PreAttentionLayerNorm(x)), then + FFN(PostAttentionLayerNorm(.))), in eval mode (no
    dropout), with DENSE attention, so every layer sees the activations of the trained dense model;
  * at every layer the same q, k, v and key padding mask also go through
    torch.ops.ds.nm_sparse_attention (libds_torch.so) for 1:2 and 2:4.

Reported per layer, over the real (unpadded) query rows of all batches:
  rel_err   ||O_nm - O_dense||_F / ||O_dense||_F of the attention output (per head, before W_o)
  mass      mean over rows and heads of the dense softmax probability on the keys N:M keeps
            (1.0 = nothing lost; a uniform row keeps n/m)
The op's output is first checked against an N:M attention written here in torch (stable sort,
ties to the lower key index): a mismatch stops the study.

Example (CPU, the tiny recipe model):
  DS_TORCH_LIB=build/lib/libds_torch.so /usr/bin/python3 benchmarks/nm_accuracy_study.py \\
      --checkpoint /tmp/nm_study/saved_models/bing_bert_tiny --cf configs/bert_tiny.json \\
      --shards data/shards/seq128 --batches 4 --batch_size 16

A tiny model trained for a few steps has nearly uniform attention, so its figures say little about
a trained BERT; run it on a real checkpoint (bert_base after pre-training) for the paper-like study.
"""
import argparse
import glob
import json
import math
import os
import sys

import torch


def load_library(path):
    if not os.path.exists(path):
        sys.exit(f"libds_torch.so not found at {path}; build the ds_torch target or set DS_TORCH_LIB")
    torch.ops.load_library(path)


def find_checkpoint(path):
    """A model-states .pt file, or the newest mp_rank_00_model_states.pt under a folder."""
    if os.path.isfile(path):
        return path
    found = glob.glob(os.path.join(path, "**", "mp_rank_00_model_states.pt"), recursive=True)
    if not found:
        sys.exit(f"no mp_rank_00_model_states.pt under {path}")
    return max(found, key=os.path.getmtime)


def load_weights(path, dtype):
    try:
        sd = torch.load(path, map_location="cpu", weights_only=False)
    except TypeError:  # torch < 1.13 has no weights_only
        sd = torch.load(path, map_location="cpu")
    module = sd["module"] if "module" in sd else sd
    return {k: v.to(dtype) if v.is_floating_point() else v for k, v in module.items()}


def read_shards(pattern, max_instances):
    try:
        import h5py
    except ImportError:
        print("h5py is not importable: no real inputs, so no study (install python3-h5py)")
        sys.exit(0)
    files = sorted(glob.glob(os.path.join(pattern, "*.hdf5")) if os.path.isdir(pattern) else glob.glob(pattern))
    if not files:
        sys.exit(f"no .hdf5 shards at {pattern}")
    ids, seg, mask, used = [], [], [], []
    n = 0
    for f in files:
        used.append(f)
        with h5py.File(f, "r") as h:
            take = min(max_instances - n, h["input_ids"].shape[0])
            ids.append(torch.from_numpy(h["input_ids"][:take].astype("int64")))
            seg.append(torch.from_numpy(h["segment_ids"][:take].astype("int64")))
            mask.append(torch.from_numpy(h["input_mask"][:take].astype("int64")))
            n += take
        if n >= max_instances:
            break
    return torch.cat(ids), torch.cat(seg), torch.cat(mask), used


def layer_norm(x, w, b, eps):
    return torch.nn.functional.layer_norm(x, (x.shape[-1],), w, b, eps)


def act(x, name):
    if name == "gelu":
        return torch.nn.functional.gelu(x)
    if name == "relu":
        return torch.relu(x)
    if name == "swish":
        return x * torch.sigmoid(x)
    raise ValueError(f"hidden_act {name!r}")


def nm_keep(scores, n, m):
    """Bool [..., S]: the n largest of every m consecutive keys, ties to the lower index."""
    S = scores.shape[-1]
    pad = (m - S % m) % m
    s = torch.nn.functional.pad(scores, (0, pad), value=-math.inf) if pad else scores
    g = s.reshape(*s.shape[:-1], -1, m)
    order = torch.sort(g, dim=-1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(-1, order, torch.arange(m).expand_as(order).contiguous())
    keep = (rank < n).reshape(s.shape)
    return keep[..., :S]


def study(p, cfg, ids, seg, mask, batch_size, dtype):
    H = p["bert.embeddings.word_embeddings.weight"].shape[1]
    heads = cfg["num_attention_heads"]
    d = H // heads
    eps = cfg.get("layer_norm_eps", 1e-12)
    hidden_act = cfg.get("hidden_act", "gelu")
    layers = 0
    while f"bert.encoder.layer.{layers}.attention.self.query.weight" in p:
        layers += 1
    patterns = [(1, 2), (2, 4)]
    # Per layer and pattern: sums over batches of ||diff||^2, ||dense||^2, kept mass, rows.
    acc = [{nm: [0.0, 0.0, 0.0, 0] for nm in patterns} for _ in range(layers)]
    lin = lambda x, name: torch.nn.functional.linear(x, p[name + ".weight"], p[name + ".bias"])
    for start in range(0, ids.shape[0], batch_size):
        b_ids, b_seg, b_mask = ids[start:start + batch_size], seg[start:start + batch_size], mask[start:start + batch_size]
        B, S = b_ids.shape
        x = (p["bert.embeddings.word_embeddings.weight"][b_ids] + p["bert.embeddings.position_embeddings.weight"][:S]
             + p["bert.embeddings.token_type_embeddings.weight"][b_seg])
        x = layer_norm(x, p["bert.embeddings.LayerNorm.weight"], p["bert.embeddings.LayerNorm.bias"], eps)
        kp = (1.0 - b_mask.to(dtype)) * -10000.0  # [B, S], BERT's additive mask
        rows = b_mask.bool()[:, None, :, None]    # real query rows [B, 1, S, 1]
        for l in range(layers):
            pre = f"bert.encoder.layer.{l}."
            h = layer_norm(x, p[pre + "PreAttentionLayerNorm.weight"], p[pre + "PreAttentionLayerNorm.bias"], eps)
            split = lambda t: t.view(B, S, heads, d).permute(0, 2, 1, 3)
            q = split(lin(h, pre + "attention.self.query"))
            k = split(lin(h, pre + "attention.self.key"))
            v = split(lin(h, pre + "attention.self.value"))
            scores = q @ k.transpose(-1, -2) / math.sqrt(d) + kp[:, None, None, :]  # [B, heads, S, S]
            probs = torch.softmax(scores, -1)
            dense = probs @ v                                                          # [B, heads, S, d]
            for n, m in patterns:
                out = torch.ops.ds.nm_sparse_attention(q, k, v, n, m, None, kp, None, "add", "mul", False)
                keep = nm_keep(scores, n, m)
                mine = torch.softmax(scores.masked_fill(~keep, -math.inf), -1) @ v
                err = ((out - mine).norm() / mine.norm()).item()
                tol = 1e-10 if dtype == torch.float64 else 1e-4
                if err > tol:
                    sys.exit(f"layer {l} {n}:{m}: the op differs from the torch N:M attention by {err:.2e} (> {tol})")
                a = acc[l][(n, m)]
                a[0] += ((out - dense) * rows).pow(2).sum().item()
                a[1] += (dense * rows).pow(2).sum().item()
                a[2] += ((probs * keep).sum(-1, keepdim=True) * rows).sum().item()
                a[3] += int(rows.sum().item()) * heads
            ctx = dense.permute(0, 2, 1, 3).reshape(B, S, H)
            y = x + lin(ctx, pre + "attention.output.dense")
            z = layer_norm(y, p[pre + "PostAttentionLayerNorm.weight"], p[pre + "PostAttentionLayerNorm.bias"], eps)
            x = y + lin(act(lin(z, pre + "intermediate.dense_act"), hidden_act), pre + "output.dense")
    return acc, patterns


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True, help="a mp_rank_00_model_states.pt, or a folder holding some")
    ap.add_argument("--cf", required=True, help="the bing_bert model config (bert_model_config: heads, eps, act)")
    ap.add_argument("--shards", required=True, help="folder of .hdf5 shards (or a glob)")
    ap.add_argument("--batches", type=int, default=4)
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--lib", default=os.environ.get("DS_TORCH_LIB", "build/lib/libds_torch.so"))
    args = ap.parse_args()

    load_library(args.lib)
    torch.set_grad_enabled(False)
    dtype = getattr(torch, args.dtype)
    ckpt = find_checkpoint(args.checkpoint)
    with open(args.cf) as f:
        cf = json.load(f)
    cfg = cf.get("bert_model_config", cf)
    p = load_weights(ckpt, dtype)
    ids, seg, mask, files = read_shards(args.shards, args.batches * args.batch_size)
    print(f"checkpoint {ckpt}")
    print(f"inputs     {ids.shape[0]} instances of {ids.shape[1]} tokens from {len(files)} shard(s) "
          f"({mask.sum().item() / mask.numel():.0%} real tokens); dtype {args.dtype}")
    acc, patterns = study(p, cfg, ids, seg, mask, args.batch_size, dtype)
    head = "layer | " + " | ".join(f"rel_err {n}:{m}" for n, m in patterns) + " | " + \
        " | ".join(f"mass {n}:{m}" for n, m in patterns)
    print(head)
    print("-" * len(head))
    for l, a in enumerate(acc):
        errs = [math.sqrt(a[nm][0] / a[nm][1]) for nm in patterns]
        mass = [a[nm][2] / a[nm][3] for nm in patterns]
        print(f"{l:5d} | " + " | ".join(f"{e:11.4f}" for e in errs) + " | " + " | ".join(f"{x:8.4f}" for x in mass))


if __name__ == "__main__":
    main()
