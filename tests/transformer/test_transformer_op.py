"""torch.ops.ds.transformer_layer against a plain PyTorch composition in float64 (forward and the
gradients of the input and all 12 parameters), pre-LN and post-LN, each memory flag alone and all
together; dropout reproducibility under torch.manual_seed; config errors.

Usage: test_transformer_op.py path/to/libds_torch.so
"""
import json
import math
import sys

import torch

torch.ops.load_library(sys.argv[1])
op = torch.ops.ds.transformer_layer

NAMES = ["attn_qkvw", "attn_qkvb", "attn_ow", "attn_ob", "attn_nw", "attn_nb",
         "inter_w", "inter_b", "output_w", "output_b", "norm_w", "norm_b"]


def reference(x, mask, p, heads, pre_ln, eps):
    """DeepSpeed's layer dataflow (deepspeed-behaviour.md 2.5) with dropout off."""
    qkvw, qkvb, ow, ob, anw, anb, iw, ib, outw, outb, nw, nb = p
    b, s, h = x.shape
    d = h // heads
    ln = lambda t, w, bb: torch.nn.functional.layer_norm(t, (h,), w, bb, eps)
    gelu = lambda z: 0.5 * z * (1 + torch.tanh(math.sqrt(2 / math.pi) * (z + 0.044715 * z ** 3)))
    a_in = ln(x, nw, nb) if pre_ln else x
    q, k, v = torch.nn.functional.linear(a_in, qkvw, qkvb).view(b, s, 3, heads, d).permute(2, 0, 3, 1, 4)
    probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d) + mask, -1)
    ctx = (probs @ v).transpose(1, 2).reshape(b, s, h)
    add_res = x + torch.nn.functional.linear(ctx, ow, ob)
    ff1 = ln(add_res, anw, anb)
    ff = torch.nn.functional.linear(gelu(torch.nn.functional.linear(ff1, iw, ib)), outw, outb)
    return add_res + ff if pre_ln else ln(ff1 + ff, nw, nb)


def random_params(h, i):
    w = lambda o, n: torch.randn(o, n, dtype=torch.float64) / math.sqrt(n)
    v = lambda n, c: c + 0.1 * torch.randn(n, dtype=torch.float64)
    return [w(3 * h, h), v(3 * h, 0), w(h, h), v(h, 0), v(h, 1), v(h, 0),
            w(i, h), v(i, 0), w(h, i), v(h, 0), v(h, 1), v(h, 0)]


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def check_against_reference(pre_ln, flags):
    torch.manual_seed(1)
    b, s, h, heads, i = 2, 11, 32, 4, 48
    cfg = {"hidden_size": h, "heads": heads, "intermediate_size": i, "attn_dropout_ratio": 0.1,
           "hidden_dropout_ratio": 0.1, "layer_norm_eps": 1e-5, "pre_layer_norm": pre_ln, **flags}
    params = [t.requires_grad_() for t in random_params(h, i)]
    x = torch.randn(b, s, h, dtype=torch.float64, requires_grad=True)
    mask = torch.zeros(b, 1, 1, s, dtype=torch.float64)
    mask[1, ..., -3:] = -10000.0
    gy = torch.randn(b, s, h, dtype=torch.float64)
    # training=False turns dropout off, so the reference needs no masks; with grad on the op must
    # then refuse backward (eval keeps nothing) ...
    out_eval = op(x, mask, params, json.dumps(cfg), False)
    try:
        out_eval.backward(gy)
        raise AssertionError("backward through an eval call was accepted")
    except RuntimeError as e:
        assert "eval mode" in str(e), str(e)
    # ... so compare a training call with dropout 0.
    cfg.update(attn_dropout_ratio=0.0, hidden_dropout_ratio=0.0)
    out = op(x, mask, params, json.dumps(cfg), True)
    grads = torch.autograd.grad(out, [x] + params, gy)
    xr = x.detach().clone().requires_grad_()
    pr = [t.detach().clone().requires_grad_() for t in params]
    ref = reference(xr, mask, pr, heads, pre_ln, 1e-5)
    ref_grads = torch.autograd.grad(ref, [xr] + pr, gy)
    where = f"pre_ln={pre_ln} flags={flags}"
    assert rel(out, ref) < 1e-10, (where, "output", rel(out, ref))
    assert rel(out_eval, ref) < 1e-10, (where, "eval output", rel(out_eval, ref))
    for name, g, r in zip(["input"] + NAMES, grads, ref_grads):
        assert rel(g, r) < 1e-10, (where, name, rel(g, r))


def check_dropout_repeats():
    h, heads = 16, 2
    cfg = json.dumps({"hidden_size": h, "heads": heads, "attn_dropout_ratio": 0.3, "hidden_dropout_ratio": 0.3})
    params = random_params(h, 4 * h)
    x = torch.randn(2, 5, h, dtype=torch.float64)
    empty = torch.empty(0, dtype=torch.float64)
    torch.manual_seed(5)
    a = op(x, empty, params, cfg, True)
    b = op(x, empty, params, cfg, True)
    torch.manual_seed(5)
    a2 = op(x, empty, params, cfg, True)
    assert torch.equal(a, a2), "torch.manual_seed must repeat the dropout masks"
    assert not torch.allclose(a, b), "consecutive calls must draw new masks"
    assert torch.equal(op(x, empty, params, cfg, False), op(x, empty, params, cfg, False))


def check_errors():
    params = random_params(16, 64)
    x = torch.randn(1, 4, 16, dtype=torch.float64)
    for cfg, needle in [({"hidden_size": 16, "heads": 3}, "not divisible by heads"),
                        ({"hidden_size": 16, "heads": 2, "attn_dropout_ratio": 1.5}, "attn_dropout_ratio"),
                        ({"hidden_size": 16, "heads": 2, "attn_dropout_ratio": 0.1,
                          "hidden_dropout_ratio": 0.1, "hiden_size": 4}, "hiden_size"),
                        ({"hidden_size": 32, "heads": 2, "attn_dropout_ratio": 0.1,
                          "hidden_dropout_ratio": 0.1}, "config hidden_size")]:
        try:
            op(x, torch.empty(0), params, json.dumps(cfg), True)
            raise AssertionError(f"{cfg} was accepted")
        except RuntimeError as e:
            assert needle in str(e), (needle, str(e))


FLAG_SETS = [{}, {"attn_dropout_checkpoint": True}, {"normalize_invertible": True}, {"gelu_checkpoint": True},
             {"attn_dropout_checkpoint": True, "normalize_invertible": True, "gelu_checkpoint": True}]

if __name__ == "__main__":
    n = 0
    for pre_ln in (True, False):
        for flags in FLAG_SETS:
            check_against_reference(pre_ln, flags)
            n += 1
    check_dropout_repeats()
    check_errors()
    print(f"transformer_layer op: {n} reference comparisons, dropout repeatability and config errors passed")
