#!/usr/bin/env python3
"""Writes the golden files the bing_bert data tests compare against, from Google's own code.

    python3 tests/bing_bert/make_goldens.py /path/to/google-research/bert

runs google-research/bert's tokenization.py and create_pretraining_data.py (not part of this
repository; TensorFlow is replaced by a stub of the few calls they make) on
tests/bing_bert/data/tiny_corpus.txt and tiny_vocab.txt, and writes
  data/google_tokenizer_golden.jsonl   BasicTokenizer (uncased and cased) and FullTokenizer
                                       output for hand-picked and random Unicode texts
  data/google_instances_golden.jsonl   create_training_instances output for two flag sets
The first line of each file records the format version, Python and Unicode versions and the
commit of the bert checkout. Regenerate when the Unicode tables are regenerated.
"""
import builtins
import json
import os
import random
import subprocess
import sys
import types
import unicodedata

FORMAT_VERSION = 1
HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")


def install_tensorflow_stub():
    tf = types.ModuleType("tensorflow")

    class Flags:
        pass

    flags_mod = types.SimpleNamespace(FLAGS=Flags())

    def define(name, default, *_args, **_kw):
        setattr(flags_mod.FLAGS, name, default)

    for kind in ("string", "bool", "integer", "float"):
        setattr(flags_mod, "DEFINE_" + kind, define)
    flags_mod.mark_flag_as_required = lambda *_a, **_k: None
    tf.flags = flags_mod
    # Google reads with tf.gfile.GFile(path, "r"): lines end at "\n" only, text is UTF-8.
    tf.gfile = types.SimpleNamespace(
        GFile=lambda path, mode="r": builtins.open(path, mode, encoding="utf-8", newline="\n"),
        Glob=lambda pattern: [pattern])
    tf.logging = types.SimpleNamespace(info=lambda *a, **k: None, set_verbosity=lambda *a: None, INFO=0)
    sys.modules["tensorflow"] = tf


def tokenizer_texts():
    fixed = [
        "Hello, World!",
        "Héllo wörld. Ça va? Naïve résumé at the café; ÉCOLE d'été",
        "unaffable lighthouse sunflowers busiest librarian",
        "Straße İstanbul ǅemal ẞ ﬁne ½ ℌ Ⅻ",
        "ΟΔΟΣ. ΣΟΦΙΑ Σ ΑΣ'Α ΑΣ.Α ἈΘῆΝΑΙ",
        "ПРИВЕТ, Мир! Ёлка й",
        "中国人 和 日本人 한국어 カタカナ ｆｕｌｌ",
        "tab\there\nnew\rline\u00a0nbsp\u2003em\u3000ideo\u2028ls\u2029ps\u0085nel",
        "ctrl\x00nul\x01soh\x7fdel\u200bzwsp\ufeffbom\u00adshy\ufffdrepl",
        "a\u0301b\u0327c\u20dd e\u0308\u0304 \u0301\u0302 x",
        "$5 + 3 = 8 < 9 > 7 | ^ ` ~ \\ [MASK] [CLS] don't o'clock 3.14 e-mail",
        "\U0001F600 emoji \U00010400 \U0001D400 \U00020000\U0002A700",
        "   leading and trailing   ",
        "",
        "a" * 120 + " " + "b" * 99,
    ]
    rng = random.Random(20240601)
    pools = [
        list(range(0x20, 0x7F)), list(range(0xA0, 0x250)), list(range(0x370, 0x400)),
        list(range(0x400, 0x530)), list(range(0x300, 0x370)), list(range(0x1E00, 0x2000)),
        list(range(0x2000, 0x2070)), list(range(0x3000, 0x3100)), list(range(0x4E00, 0x4E40)),
        list(range(0xAC00, 0xAC40)), list(range(0xFF00, 0xFF70)), [0x3A3, 0x3A3, 0x3A3, 0x130, 0x1E9E, 0x1C5],
        list(range(0x0, 0x20)) + [0x7F, 0x85, 0xAD, 0x200B, 0x200D, 0x2060, 0xFEFF, 0xFFFD],
        list(range(0x10400, 0x10450)) + list(range(0x1D400, 0x1D420)) + list(range(0x13A0, 0x13F6)),
    ]
    random_texts = []
    for _ in range(300):
        n = rng.randint(1, 24)
        cps = []
        for _ in range(n):
            if rng.random() < 0.12:
                cps.append(0x20)
            elif rng.random() < 0.05:
                cp = rng.randint(0, 0x10FFFF)
                cps.append(cp if not 0xD800 <= cp <= 0xDFFF else 0x41)
            else:
                cps.append(rng.choice(rng.choice(pools)))
        random_texts.append("".join(chr(c) for c in cps))
    return fixed, random_texts


def git_commit(path):
    try:
        return subprocess.check_output(["git", "-C", path, "rev-parse", "HEAD"], text=True).strip()
    except Exception:  # a plain copy of the files
        return "unknown"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    bert_dir = os.path.abspath(sys.argv[1])
    install_tensorflow_stub()
    sys.path.insert(0, bert_dir)
    import tokenization
    import create_pretraining_data as cpd

    header = {"version": FORMAT_VERSION, "python": sys.version.split()[0], "unicode": unicodedata.unidata_version,
              "bert_commit": git_commit(bert_dir)}
    vocab_file = os.path.join(DATA, "tiny_vocab.txt")
    corpus_file = os.path.join(DATA, "tiny_corpus.txt")

    fixed, random_texts = tokenizer_texts()
    lower = tokenization.BasicTokenizer(do_lower_case=True)
    cased = tokenization.BasicTokenizer(do_lower_case=False)
    # Google's default max_input_chars_per_word is 200; the tests use the same for this golden.
    full = tokenization.FullTokenizer(vocab_file=vocab_file, do_lower_case=True)
    with open(os.path.join(DATA, "google_tokenizer_golden.jsonl"), "w") as out:
        out.write(json.dumps(dict(header, max_input_chars_per_word=200)) + "\n")
        for kind, texts in (("fixed", fixed), ("random", random_texts)):
            for text in texts:
                rec = {"kind": kind, "text": text, "lower": lower.tokenize(text), "cased": cased.tokenize(text)}
                if kind == "fixed":
                    rec["wordpiece"] = full.tokenize(text)
                out.write(json.dumps(rec) + "\n")

    configs = [
        dict(name="seq32", max_seq_length=32, max_predictions_per_seq=5, masked_lm_prob=0.15, dupe_factor=3,
             short_seq_prob=0.1, random_seed=12345, do_whole_word_mask=False),
        dict(name="seq48_wwm", max_seq_length=48, max_predictions_per_seq=7, masked_lm_prob=0.2, dupe_factor=2,
             short_seq_prob=0.3, random_seed=99, do_whole_word_mask=True),
    ]
    with open(os.path.join(DATA, "google_instances_golden.jsonl"), "w") as out:
        out.write(json.dumps(header) + "\n")
        for c in configs:
            cpd.FLAGS.do_whole_word_mask = c["do_whole_word_mask"]
            rng = random.Random(c["random_seed"])
            instances = cpd.create_training_instances(
                [corpus_file], full, c["max_seq_length"], c["dupe_factor"], c["short_seq_prob"],
                c["masked_lm_prob"], c["max_predictions_per_seq"], rng)
            out.write(json.dumps({"config": c, "instances": len(instances)}) + "\n")
            for inst in instances:
                out.write(json.dumps({
                    "input_ids": full.convert_tokens_to_ids(inst.tokens),
                    "segment_ids": inst.segment_ids,
                    "masked_lm_positions": inst.masked_lm_positions,
                    "masked_lm_ids": full.convert_tokens_to_ids(inst.masked_lm_labels),
                    "is_random_next": inst.is_random_next}) + "\n")


if __name__ == "__main__":
    main()
