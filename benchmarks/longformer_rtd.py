"""BudgetLongformer benchmarks.

(b) ``--part speed``: Longformer self-attention alone (base size: hidden 768, 12 heads, window 512, global
    attention on the first token), forward + backward at sequence length 4,096 (and 1,024): transformers'
    ``LongformerSelfAttention`` against ours (``FastLongformerSelfAttention``), same weights, same input, run
    interleaved in one process with the same threads, median of several repeats, plus the largest output and
    gradient difference. Memory: the bytes autograd saves for backward, and the peak resident-memory increase
    during one forward + backward, each measured in a fresh subprocess (``/proc/self/clear_refs`` resets the
    peak; glibc's mmap threshold is pinned so freed blocks return to the OS).
(a) ``--part sample``: replaced-token detection against masked-LM pretraining at equal compute (training FLOPs
    counted with ``torch.utils.flop_counter``), both through the ``longformer-rtd-legal`` recipe on the licence
    texts, then the downstream score of each (``longformer-licence-category``, fine-tuned from each
    discriminator/encoder with the same budget) next to a model trained from scratch.

    python benchmarks/longformer_rtd.py [--quick] [--part speed|sample|all] [--work-dir DIR] [--downstream-only]

``--work-dir`` keeps the pretrained folders (``DIR/rtd``, ``DIR/mlm``, ``DIR/scratch``); a later run with the same
``--work-dir`` reuses any pretraining folder whose ``metrics.json`` has the requested step count, and
``--downstream-only`` insists on that (no pretraining; only the probe and the fine-tuning run again).

Prints markdown tables and replaces its sections in ``benchmarks/results/longformer_rtd.md``.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "longformer_rtd.md"


# -- (b) speed -----------------------------------------------------------------------------------------------


def attention_pair(seq_len: int, hidden: int = 768, heads: int = 12, window: int = 512, seed: int = 0):
    import torch
    from transformers import LongformerConfig
    from transformers.models.longformer.modeling_longformer import LongformerSelfAttention

    from hf_plugins.modeling.longformer_attention import FastLongformerSelfAttention

    config = LongformerConfig(hidden_size=hidden, num_attention_heads=heads, attention_window=[window],
                              num_hidden_layers=1, attention_probs_dropout_prob=0.0)
    torch.manual_seed(seed)
    hf = LongformerSelfAttention(config, 0)
    fast = FastLongformerSelfAttention(config, 0)
    fast.load_state_dict(hf.state_dict())
    x = torch.randn(1, seq_len, hidden, generator=torch.Generator().manual_seed(seed + 1))
    mask = torch.zeros(1, seq_len)
    mask[0, 0] = 10000.0  # global attention on the first token (<s>), as the model sets it
    grad_out = torch.randn(1, seq_len, hidden, generator=torch.Generator().manual_seed(seed + 2))
    return hf, fast, x, mask, grad_out


def fwd_bwd(module, x, mask, grad_out):
    x = x.detach().requires_grad_(True)
    out = module(x, attention_mask=mask, is_index_masked=mask < 0, is_index_global_attn=mask > 0,
                 is_global_attn=True)[0]
    out.backward(grad_out)
    return out, x.grad


def speed_rows(seq_lens, repeats: int, threads: int) -> list[dict]:
    import torch

    torch.set_num_threads(threads)
    rows = []
    for seq_len in seq_lens:
        hf, fast, x, mask, grad_out = attention_pair(seq_len)
        # Parity at the benchmark size (outputs, input gradient, weight gradients).
        out_hf, gx_hf = fwd_bwd(hf, x, mask, grad_out)
        out_fast, gx_fast = fwd_bwd(fast, x, mask, grad_out)
        # Largest difference relative to the largest magnitude, for the output and for every gradient.
        out_diff = _rel(out_hf, out_fast)
        # Key biases get no gradient in exact arithmetic (softmax is shift invariant): skip such round-off-only
        # gradients, whose relative difference means nothing.
        grads = [(gx_hf, gx_fast)] + [(a.grad, b.grad) for a, b in zip(hf.parameters(), fast.parameters())]
        largest = max(float(a.norm()) for a, _ in grads)
        grad_diff = max(_rel(a, b) for a, b in grads if float(a.norm()) > 1e-6 * largest)
        times = {"hf": [], "fast": []}
        for _ in range(repeats):  # interleaved
            for name, module in (("hf", hf), ("fast", fast)):
                module.zero_grad(set_to_none=True)
                start = time.perf_counter()
                fwd_bwd(module, x, mask, grad_out)
                times[name].append(time.perf_counter() - start)
        memory = {name: memory_in_subprocess(name, seq_len, threads) for name in ("hf", "fast")}
        hf_t, fast_t = statistics.median(times["hf"]), statistics.median(times["fast"])
        rows.append(dict(
            seq_len=seq_len, hf_s=hf_t, fast_s=fast_t, speedup=hf_t / fast_t,
            hf_saved_mib=memory["hf"]["saved_mib"], fast_saved_mib=memory["fast"]["saved_mib"],
            hf_peak_mib=memory["hf"]["peak_mib"], fast_peak_mib=memory["fast"]["peak_mib"],
            out_diff=out_diff, grad_diff=grad_diff, load=os.getloadavg(), repeats=repeats, threads=threads,
        ))
        print(json.dumps(rows[-1]), flush=True)
    return rows


def _rel(a, b) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / a.abs().max().clamp(min=1e-30))


def memory_in_subprocess(impl: str, seq_len: int, threads: int) -> dict:
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0"}
    code = (f"import sys; sys.path.insert(0, {str(Path(__file__).resolve().parent)!r}); import longformer_rtd as b; "
            f"b._measure_memory({impl!r}, {seq_len}, {threads})")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _measure_memory(impl: str, seq_len: int, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    hf, fast, x, mask, grad_out = attention_pair(seq_len)
    module = hf if impl == "hf" else fast
    fwd_bwd(module, x, mask, grad_out)  # warm-up (allocator, kernels)
    module.zero_grad(set_to_none=True)
    # Bytes saved for backward (unique storages).
    storages = {}

    def pack(t):
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return t

    x_req = x.detach().requires_grad_(True)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = module(x_req, attention_mask=mask, is_index_masked=mask < 0, is_index_global_attn=mask > 0,
                     is_global_attn=True)[0]
    out.backward(grad_out)
    del out, x_req
    module.zero_grad(set_to_none=True)
    # Peak resident memory of one forward + backward above the resident memory before it.
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    before = _proc_status("VmRSS")
    fwd_bwd(module, x, mask, grad_out)
    peak = _proc_status("VmHWM")
    print(json.dumps({"saved_mib": sum(storages.values()) / 2**20, "peak_mib": (peak - before) / 1024}))


def _proc_status(key: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])  # kB
    raise KeyError(key)


def speed_table(rows, command: str) -> str:
    lines = [
        "## (b) Attention speed: ours vs transformers' LongformerSelfAttention",
        "",
        f"Command: `{command}`",
        "",
        "Attention module alone, hidden 768, 12 heads, window 512 (one-sided 256), batch 1, global attention on the "
        f"first token, forward + backward, CPU, {rows[0]['threads']} thread(s), median of {rows[0]['repeats']} "
        "interleaved repeats, same weights and input. Differences: max |ours - transformers| / max |transformers| of "
        "the output and of each gradient (input and weights). `saved` = bytes autograd keeps for backward; `peak` = peak "
        "resident-memory increase during one forward + backward (fresh subprocess each).",
        "",
        "| seq len | transformers (s) | ours (s) | speed-up | saved MiB hf / ours | peak MiB hf / ours | max rel. diff out / grads | load avg |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['seq_len']} | {r['hf_s']:.3f} | {r['fast_s']:.3f} | **{r['speedup']:.2f}x** | "
            f"{r['hf_saved_mib']:.0f} / {r['fast_saved_mib']:.0f} | {r['hf_peak_mib']:.0f} / {r['fast_peak_mib']:.0f} | "
            f"{r['out_diff']:.1e} / {r['grad_diff']:.1e} | {r['load'][0]:.1f} |"
        )
    return "\n".join(lines) + "\n"


# -- (a) sample efficiency ---------------------------------------------------------------------------------


def sample_efficiency(quick: bool, seed: int, work: Path, downstream_only: bool = False,
                      fine_tune_steps: int | None = None, fine_tune_lr: float | None = None,
                      head_lr: float | None = None) -> tuple[list[dict], dict]:
    from hf_plugins.recipes import run_recipe

    size = dict(hidden=128, layers=2, heads=4, window=64, length=512, vocab=4096, batch=4,
                rtd_steps=100 if quick else 400, fine_tune_steps=60 if quick else 150, fine_tune_length=512,
                fine_tune_lr=3e-4, head_lr=3e-3, class_weighting="balanced", pooling="mean")
    # Fine-tuning: head on the mean-pooled final states, body learning rate 3e-4, the new head 10x that,
    # class-balanced cross-entropy
    # (see build_classification: with one learning rate and plain cross-entropy every start point collapsed onto
    # the majority class within the budget, which made the downstream comparison meaningless).
    if fine_tune_steps is not None:
        size["fine_tune_steps"] = fine_tune_steps
    if fine_tune_lr is not None:
        size["fine_tune_lr"], size["head_lr"] = fine_tune_lr, 10 * fine_tune_lr
    if head_lr is not None:
        size["head_lr"] = head_lr
    common = ["--hidden-size", str(size["hidden"]), "--num-layers", str(size["layers"]), "--num-heads",
              str(size["heads"]), "--attention-window", str(size["window"]), "--max-length", str(size["length"]),
              "--vocab-size", str(size["vocab"]), "--batch-size", str(size["batch"]), "--seed", str(seed)]
    flops = {obj: train_step_flops(obj, size) for obj in ("rtd", "mlm")}
    steps = {"rtd": size["rtd_steps"], "mlm": max(1, round(size["rtd_steps"] * flops["rtd"] / flops["mlm"]))}
    rows = []
    for objective in ("rtd", "mlm", "scratch"):
        start = time.perf_counter()
        pre = None
        pre_time = None
        if objective != "scratch":
            pre = str(work / objective)
            done = _finished_pretraining(work / objective, steps[objective])
            if done is not None:  # reuse: wall time as recorded by that run
                pre_time = done
            elif downstream_only:
                raise SystemExit(f"--downstream-only: no finished {objective} pretraining with {steps[objective]} "
                                 f"steps in {work / objective}")
            else:
                pre = run_recipe("longformer-rtd-legal", common + ["--objective", objective, "--max-steps",
                                 str(steps[objective]), "--output-dir", str(work / objective)])
        pre_time = time.perf_counter() - start if pre_time is None else pre_time
        tune_args = ["--max-length", str(size["fine_tune_length"]), "--batch-size", "8", "--learning-rate",
                     str(size["fine_tune_lr"]), "--head-learning-rate", str(size["head_lr"]), "--class-weighting",
                     size["class_weighting"], "--pooling", size["pooling"], "--seed",
                     str(seed), "--max-steps", str(size["fine_tune_steps"]), "--output-dir", str(work / f"{objective}-cls")]
        if pre is not None:
            tune_args += ["--pretrained", pre]
        else:  # the same architecture, untrained: build it from the RTD run's exported config and tokenizer
            tune_args += ["--pretrained", str(work / "scratch")]
        encoder = os.path.join(pre, "discriminator") if pre is not None else str(work / "scratch")
        if pre is None:
            make_untrained(work / "rtd", work / "scratch")
        probe = linear_probe(encoder, size["fine_tune_length"], seed)
        print(json.dumps({"objective": objective, "probe": probe}), flush=True)
        cls = run_recipe("longformer-licence-category", tune_args)
        with open(os.path.join(cls, "metrics.json")) as fh:
            test = json.load(fh)["test"]
        pre_metrics = {}
        if pre is not None:
            with open(os.path.join(pre, "metrics.json")) as fh:
                pre_metrics = json.load(fh)["test"]
        rows.append(dict(
            objective=objective, steps=steps.get(objective, 0),
            flops=steps.get(objective, 0) * flops.get(objective, 0), pretrain_s=pre_time,
            pre_mlm_loss=pre_metrics.get("mlm_loss"), pre_rtd_f1=pre_metrics.get("rtd_replaced_f1"),
            accuracy=test["test_accuracy"], macro_f1=test["test_macro_f1"], probe_accuracy=probe["accuracy"],
            probe_macro_f1=probe["macro_f1"], load=os.getloadavg(),
        ))
        print(json.dumps(rows[-1]), flush=True)
    return rows, dict(size=size, step_flops=flops)


def _finished_pretraining(folder: Path, steps: int) -> float | None:
    """The recorded training wall time of a finished pretraining run in ``folder`` with ``steps`` steps, else None."""
    try:
        with open(folder / "metrics.json") as fh:
            metrics = json.load(fh)
    except (OSError, ValueError):
        return None
    if metrics.get("max_steps") != steps or not (folder / "discriminator").is_dir():
        return None
    return float(metrics["train"]["train_runtime"])


def train_step_flops(objective: str, size: dict) -> float:
    """FLOPs of one forward + backward of a training batch (same sequences and masks for both objectives)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import LongformerConfig, LongformerForMaskedLM

    from hf_plugins import LongformerRTDConfig, LongformerRTDForPreTraining, set_attention_backend

    common = dict(vocab_size=size["vocab"], hidden_size=size["hidden"], num_hidden_layers=size["layers"],
                  num_attention_heads=size["heads"], intermediate_size=4 * size["hidden"],
                  attention_window=size["window"], max_position_embeddings=size["length"] + 2, type_vocab_size=1)
    torch.manual_seed(0)
    if objective == "rtd":
        model = LongformerRTDForPreTraining(LongformerRTDConfig(**common))
    else:
        model = set_attention_backend(LongformerForMaskedLM(LongformerConfig(**common)), "fast")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, size["vocab"], (size["batch"], size["length"]), generator=g)
    ids[:, 0] = 0
    masked = torch.rand(ids.shape, generator=g) < 0.15
    masked[:, 0] = False
    labels = torch.where(masked, ids, torch.full_like(ids, -100))
    global_mask = torch.zeros_like(ids)
    global_mask[:, 0] = 1
    counter = FlopCounterMode(display=False)
    with counter:
        model(input_ids=ids.masked_fill(masked, 4), labels=labels, global_attention_mask=global_mask).loss.backward()
    # The flop counter does not see CPU SDPA kernels: add the attention band analytically (QK^T and PV, one
    # multiply-add = 2 FLOPs, forward + backward = 3x), per query (2w + 1) band keys + 1 global key.
    from transformers.models.longformer.modeling_longformer import LongformerSelfAttention

    attention = 0
    for module in model.modules():
        if isinstance(module, LongformerSelfAttention):
            keys = 2 * module.one_sided_attn_window_size + 1 + 1
            attention += 3 * 2 * 2 * ids.numel() * keys * module.embed_dim
    return float(counter.get_total_flops() + attention)


def linear_probe(folder: str, length: int, seed: int) -> dict:
    """Frozen encoder: mean-pooled final states of the first ``length`` tokens of each licence, a multinomial
    logistic regression fitted on the train split (L-BFGS, L2), scored on the test split."""
    import torch
    from transformers import AutoTokenizer, LongformerModel

    from hf_plugins.data.text import license_documents
    from hf_plugins.modeling.longformer_attention import set_attention_backend
    from hf_plugins.recipes.longformer import LongDocumentCollator, category_labels, macro_f1

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = set_attention_backend(LongformerModel.from_pretrained(folder, add_pooling_layer=False), "fast").eval()
    docs = license_documents()
    labels = category_labels(docs)
    collate = LongDocumentCollator(tokenizer.pad_token_id, max(model.config.attention_window))
    feats, golds = {}, {}
    for split in ("train", "test"):
        split_docs = [d for d in docs if d.split == split]
        ids = tokenizer([d.text for d in split_docs], truncation=True, max_length=length)["input_ids"]
        gold = [labels.index(d.category) if d.category in labels else len(labels) - 1 for d in split_docs]
        rows = []
        with torch.no_grad():
            for start in range(0, len(ids), 16):
                batch = collate([{"input_ids": i, "labels": 0} for i in ids[start : start + 16]])
                hidden = model(batch["input_ids"], attention_mask=batch["attention_mask"],
                               global_attention_mask=batch["global_attention_mask"]).last_hidden_state
                mask = batch["attention_mask"][:, :, None].float()
                rows.append((hidden * mask).sum(1) / mask.sum(1))
        feats[split], golds[split] = torch.cat(rows), torch.tensor(gold)
    mean, std = feats["train"].mean(0), feats["train"].std(0).clamp(min=1e-6)
    x_train, x_test = (feats["train"] - mean) / std, (feats["test"] - mean) / std
    torch.manual_seed(seed)
    head = torch.nn.Linear(x_train.shape[1], len(labels))
    optimizer = torch.optim.LBFGS(head.parameters(), max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(head(x_train), golds["train"]) + 1e-3 * head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        pred = head(x_test).argmax(-1)
    gold = golds["test"]
    return {"accuracy": float((pred == gold).float().mean()), "macro_f1": macro_f1(pred.numpy(), gold.numpy(), len(labels))}


def make_untrained(reference: Path, target: Path) -> Path:
    """A randomly initialised Longformer with the reference run's architecture and tokenizer."""
    import torch
    from transformers import AutoTokenizer, LongformerConfig, LongformerModel

    source = reference / "discriminator"
    torch.manual_seed(0)
    model = LongformerModel(LongformerConfig.from_pretrained(source), add_pooling_layer=False)
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return target


def sample_table(rows, meta, command: str) -> str:
    s = meta["size"]
    f = meta["step_flops"]
    lines = [
        "## (a) Sample efficiency: replaced-token detection vs masked LM at equal compute",
        "",
        f"Command: `{command}`",
        "",
        f"Pretraining on the licence texts (`longformer-rtd-legal`): discriminator / MLM model hidden {s['hidden']}, "
        f"{s['layers']} layers, {s['heads']} heads, window {s['window']}, sequences of {s['length']} tokens, batch "
        f"{s['batch']}, BPE vocabulary {s['vocab']}; the RTD generator is 1/4 of the width. Training FLOPs per step "
        f"(forward + backward; `torch.utils.flop_counter` for the matmuls plus the attention band counted analytically): RTD {f['rtd'] / 1e9:.2f} GFLOP, MLM {f['mlm'] / 1e9:.2f} "
        "GFLOP; MLM gets as many steps as the same total. Downstream: `longformer-licence-category` (8 classes, first "
        f"{s['fine_tune_length']} tokens of each licence, {s['fine_tune_steps']} steps, batch 8, learning rate "
        f"{s['fine_tune_lr']}, classification head {s.get('head_lr', s['fine_tune_lr'])}, class weighting "
        f"{s.get('class_weighting', 'none')}, head on the {s.get('pooling', 'first-token')} pooling of the final states), "
        "fine-tuned from the RTD discriminator, from the MLM encoder, and from the same architecture untrained; test "
        "split (219 licences). `probe`: the encoder frozen, mean-pooled final states of the same 512 tokens, a "
        "logistic regression fitted on the train split (a more sensitive read-out of the representation than a "
        "short fine-tuning run).",
        "",
        "| pretraining | steps | TFLOP | pretrain wall (s) | generator/MLM test loss | RTD replaced-F1 | probe accuracy | probe macro-F1 | fine-tuned accuracy | fine-tuned macro-F1 | load avg |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        mlm = "" if r["pre_mlm_loss"] is None else f"{r['pre_mlm_loss']:.3f}"
        f1 = "" if r["pre_rtd_f1"] is None else f"{r['pre_rtd_f1']:.3f}"
        lines.append(
            f"| {r['objective']} | {r['steps']} | {r['flops'] / 1e12:.2f} | {r['pretrain_s']:.0f} | {mlm} | {f1} | "
            f"{r['probe_accuracy']:.3f} | {r['probe_macro_f1']:.3f} | {r['accuracy']:.3f} | {r['macro_f1']:.3f} | "
            f"{r['load'][0]:.1f} |"
        )
    by = {r["objective"]: r for r in rows}
    verdicts = []
    for key, what in (("probe_macro_f1", "linear probe"), ("macro_f1", "fine-tuning")):
        rtd, mlm, scratch = by["rtd"][key], by["mlm"][key], by["scratch"][key]
        if abs(rtd - mlm) < 0.005:
            verdict = "RTD and MLM tie"
        else:
            verdict = "RTD beats MLM" if rtd > mlm else "RTD does NOT beat MLM"
        if max(rtd, mlm) <= scratch + 0.005:
            verdict += ", and neither beats the untrained encoder"
        verdicts.append(f"{what}: {verdict} (macro-F1 RTD {rtd:.3f}, MLM {mlm:.3f}, untrained {scratch:.3f})")
    verdict = "; ".join(verdicts)
    lines += ["", f"Verdict (one seed, small CPU budget): **{verdict}**."]
    return "\n".join(lines) + "\n"


# -- results file ------------------------------------------------------------------------------------------


def write_section(name: str, text: str) -> None:
    """Replace (or add) the section between ``<!-- name -->`` markers; written to a temp file, then renamed."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    current = RESULTS.read_text() if RESULTS.exists() else "# BudgetLongformer (longformer_rtd)\n\n"
    begin, end = f"<!-- {name} -->", f"<!-- /{name} -->"
    block = f"{begin}\n{text}{end}\n"
    if begin in current and end in current:
        head, rest = current.split(begin, 1)
        current = head + block + rest.split(end, 1)[1].lstrip("\n")
    else:
        current = current.rstrip("\n") + "\n\n" + block
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text(current)
    tmp.replace(RESULTS)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats / steps")
    parser.add_argument("--part", choices=("speed", "sample", "all"), default="all")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work-dir", default=None,
                        help="keep (and reuse) the pretrained folders here instead of a temporary directory")
    parser.add_argument("--downstream-only", action="store_true",
                        help="(a) only: reuse the pretraining in --work-dir, run just the probe and fine-tuning")
    parser.add_argument("--fine-tune-steps", type=int, default=None, help="(a) fine-tuning steps (default 150)")
    parser.add_argument("--fine-tune-lr", type=float, default=None, help="(a) encoder learning rate (default 3e-4)")
    parser.add_argument("--head-lr", type=float, default=None,
                        help="(a) classification-head learning rate (default 10x the encoder's)")
    args = parser.parse_args(argv)
    command = "python benchmarks/longformer_rtd.py " + " ".join(argv if argv is not None else sys.argv[1:])
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if args.part in ("speed", "all"):
        rows = speed_rows([4096] if args.quick else [1024, 4096], repeats=3 if args.quick else 5, threads=args.threads)
        text = speed_table(rows, command.strip())
        print(text)
        write_section("speed", text)
    if args.part in ("sample", "all"):
        import torch

        torch.set_num_threads(args.threads)
        if args.downstream_only and not args.work_dir:
            parser.error("--downstream-only needs --work-dir (where the pretraining was kept)")
        if args.work_dir:
            Path(args.work_dir).mkdir(parents=True, exist_ok=True)
            rows, meta = sample_efficiency(args.quick, args.seed, Path(args.work_dir), args.downstream_only,
                                           args.fine_tune_steps, args.fine_tune_lr, args.head_lr)
        else:
            with tempfile.TemporaryDirectory(prefix="lrtd-bench-") as work:
                rows, meta = sample_efficiency(args.quick, args.seed, Path(work), False, args.fine_tune_steps,
                                               args.fine_tune_lr, args.head_lr)
        text = sample_table(rows, meta, command.strip())
        print(text)
        write_section("sample", text)


if __name__ == "__main__":
    main()
