"""Python's torch.load reads the engine's checkpoints (run by ctest after write_checkpoint_main).

Usage: test_checkpoint_python.py <dir written by engine_write_checkpoint>
"""
import json
import os
import sys

import torch

# torch >= 2.6 loads with weights_only=True by default, which refuses the type tags of typed
# dicts and lists in the pickle (DeepSpeed's own checkpoints are loaded with weights_only=False
# for the same reason). torch 1.13 has no such argument.
LOAD_KW = {"weights_only": False} if "weights_only" in torch.load.__code__.co_varnames else {}


def check(cond, what):
    if not cond:
        print("FAIL:", what)
        sys.exit(1)


def main(root):
    expected = {}
    with open(os.path.join(root, "expected.txt")) as f:
        for line in f:
            label, name, dtype, shape, total = line.split()
            expected.setdefault(label, {})[name] = (dtype, shape, float(total))
    dtypes = {"Float": torch.float32, "Half": torch.float16}
    for label, tensors in expected.items():
        d = os.path.join(root, label)
        with open(os.path.join(d, "latest")) as f:
            tag = f.read().strip()
        check(tag == "global_step2", f"{label}: latest holds {tag!r}")
        sd = torch.load(os.path.join(d, tag, "mp_rank_00_model_states.pt"), map_location="cpu", **LOAD_KW)
        check(isinstance(sd, dict), f"{label}: model states is a {type(sd)}")
        module = sd["module"]
        check(set(module) == set(tensors), f"{label}: module keys {sorted(module)} != {sorted(tensors)}")
        for name, (dtype, shape, total) in tensors.items():
            t = module[name]
            check(isinstance(t, torch.Tensor), f"{label}: {name} is not a tensor")
            check(t.dtype == dtypes[dtype], f"{label}: {name} dtype {t.dtype} != {dtype}")
            check("x".join(str(s) for s in t.shape) == shape, f"{label}: {name} shape {tuple(t.shape)} != {shape}")
            got = float(t.double().sum())
            check(abs(got - total) <= 1e-12 * max(1.0, abs(total)), f"{label}: {name} sum {got} != {total}")
        check(sd["global_steps"] == 2 and sd["global_samples"] == 4, f"{label}: counters {sd['global_steps']}")
        check(sd["epoch"] == 7 and sd["note"] == label, f"{label}: client state {sd.get('epoch')} {sd.get('note')}")
        cfg = json.loads(sd["ds_config"])
        check(cfg["train_batch_size"] == 2, f"{label}: ds_config {cfg}")
        check(isinstance(sd["rng_state"]["cpu"], torch.Tensor), f"{label}: rng_state")
        # The usual way to put the weights into a PyTorch model: load_state_dict(sd["module"]).
        optim = torch.load(os.path.join(d, tag, "mp_rank_00_optim_states.pt"), map_location="cpu", **LOAD_KW)
        osd = optim["optimizer_state_dict"]
        check(osd["type"] == "Adam", f"{label}: optimizer {osd['type']}")
        applied = sd["global_steps"] - sd["skipped_steps"]  # fp16 may skip an overflowing first step
        check(applied >= 1 and osd["param_groups"][0]["step"] == applied, f"{label}: step {osd['param_groups'][0]['step']}")
        check(len(osd["state"]) == len(tensors), f"{label}: {len(osd['state'])} states")
        for st in osd["state"].values():
            check(st["exp_avg"].dtype == torch.float32, f"{label}: exp_avg dtype")
        masters = optim["fp32_master_weights"]
        if label == "fp32":
            check(masters is None, "fp32: the module holds the fp32 weights")
        else:
            for name in tensors:
                m = masters[name]
                check(m.dtype == torch.float32, f"{label}: master {name} dtype {m.dtype}")
                check(torch.equal(m.half(), module[name]), f"{label}: module {name} is not the rounded master")
    print("ok:", ", ".join(sorted(expected)))


if __name__ == "__main__":
    main(sys.argv[1])
