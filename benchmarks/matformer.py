"""MatFormer benchmark: joint training vs independently trained sizes, Mix'n'Match, latency, self-speculative
decoding. Real text: the licence texts of licensedcode-data with a BPE tokenizer trained on them.

    python benchmarks/matformer.py [--quick] [--steps N] [--accuracy-only | --decode-only] [--decode-steps N]

1. Joint training (paper §3, Eq. 2, mean of the four losses) of one MatLM for N steps, and four dense models
   with the S/M/L/XL FFN widths trained independently on the same batches for the same N steps; validation
   loss of S/M/L/XL and of the recommended Mix'n'Match submodels (§4.1) against their parameter counts.
2. Latency of the extracted S/M/L/XL models: one forward over a (8 x seq) batch and greedy decoding of 48
   tokens (batch 1, KV cache), interleaved, medians, ratio to XL; for part 1's model and for a hidden-512
   MatLM trained jointly for ``--decode-steps`` steps on the same batches (at hidden 128 a decoding step is
   mostly Python overhead whatever the FFN width).
3. Self-speculative decoding (§4.1.1) with the same models: greedy XL decoding vs transformers' assisted
   generation with the extracted S model as draft; identical outputs required; tokens/s and acceptance rate.

Targets (issue 5): loss(S) >= loss(M) >= loss(L) >= loss(XL); each nested size within 3% of its
independent twin; S decodes >= 1.5x faster than XL; speculative decoding faster than greedy, same output.
Writes its section into benchmarks/results/matformer.md.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import hf_plugins  # noqa: F401
from hf_plugins.configuration.matformer import MatFormerConfig
from hf_plugins.data.text import license_texts, train_bpe_tokenizer
from hf_plugins.matformer_utils import mix_n_match_configurations, self_speculative_generate
from hf_plugins.modeling.matformer import MatFormerForCausalLM
from hf_plugins.recipes.matformer import tokenize_blocks

RESULTS = Path(__file__).resolve().parent / "results" / "matformer.md"
NAMES = ["s", "m", "l", "xl"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller model and fewer steps")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--accuracy-only", action="store_true", help="only part 1 (joint vs independent)")
    parser.add_argument("--decode-only", action="store_true", help="only parts 2 and 3 (latency, speculative decoding)")
    parser.add_argument("--decode-steps", type=int, default=None,
                        help="joint training steps of the hidden-512 model of parts 2 and 3 (default 400)")
    args = parser.parse_args()
    if args.accuracy_only and args.decode_only:
        parser.error("--accuracy-only and --decode-only exclude each other")
    torch.set_num_threads(args.threads)
    q = args.quick
    size = dict(
        hidden=128 if q else 256, layers=4, heads=4, seq=128, batch=8 if q else 16, vocab=2048 if q else 4096,
        steps=args.steps or (150 if q else 400), lr=3e-3 if q else 2e-3, val_blocks=48 if q else 96,
        docs=300 if q else None, repeats=5 if q else 7, new_tokens=48,
        decode_steps=args.decode_steps or 400,
    )
    flags = " ".join(f for f in ("--quick" if q else "", f"--steps {args.steps}" if args.steps else "",
                                  "--accuracy-only" if args.accuracy_only else "",
                                  "--decode-only" if args.decode_only else "",
                                  f"--decode-steps {args.decode_steps}" if args.decode_steps else "") if f)
    command = "python benchmarks/matformer.py" + (f" {flags}" if flags else "")
    lines = [f"## MatFormer{f' ({flags})' if flags else ''}", "", f"Command: `{command}` (torch threads {args.threads}).", ""]

    def log(msg=""):
        print(msg, flush=True)
        lines.append(msg)

    # -- data -------------------------------------------------------------------------------------------
    t0 = time.time()
    train_texts, val_texts = license_texts(split="train"), license_texts(split="validation")
    if size["docs"]:
        train_texts = train_texts[: size["docs"]]
    tokenizer = train_bpe_tokenizer(train_texts, vocab_size=size["vocab"], style="llama", model_max_length=10**6)
    train = tokenize_blocks(train_texts, tokenizer, size["seq"])
    val = tokenize_blocks(val_texts, tokenizer, size["seq"])[: size["val_blocks"]]
    gen = torch.Generator().manual_seed(args.seed)
    order = torch.randint(0, train.shape[0], (max(size["steps"], size["decode_steps"]), size["batch"]), generator=gen)
    batches = [train[idx] for idx in order]
    print(f"data: {train.shape[0]} train blocks, {val.shape[0]} validation blocks ({time.time() - t0:.0f}s)", flush=True)

    def config(**kw):
        base = dict(vocab_size=len(tokenizer), hidden_size=size["hidden"], num_hidden_layers=size["layers"],
                    num_attention_heads=size["heads"], max_position_embeddings=size["seq"] + 64,
                    tie_word_embeddings=True, bos_token_id=tokenizer.bos_token_id,
                    eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
        base.update(kw)
        return MatFormerConfig(**base)

    # -- 1. joint vs independent -------------------------------------------------------------------------
    joint = None
    if not args.decode_only:
        torch.manual_seed(args.seed)
        joint = MatFormerForCausalLM(config(granularity_loss_weights=[0.25] * 4))
        widths = dict(zip(NAMES, joint.config.granularities))
        t = train_model(joint, batches[: size["steps"]], size["lr"])
        print(f"joint training: {t:.0f}s", flush=True)
        independent, seconds = {}, {"joint": t}
        for name in NAMES:
            torch.manual_seed(args.seed)
            model = MatFormerForCausalLM(config(intermediate_size=widths[name], granularities=[widths[name]],
                                                granularity_names=[name], granularity_training="current"))
            seconds[name] = train_model(model, batches[: size["steps"]], size["lr"])
            print(f"independent {name}: {seconds[name]:.0f}s", flush=True)
            independent[name] = model

        log(f"Data: licensedcode-data licence texts, {len(tokenizer)}-token BPE, blocks of {size['seq']} tokens; "
            f"{size['steps']} steps x batch {size['batch']} (same batches for every model), AdamW lr {size['lr']}, "
            f"cosine; validation = {val.shape[0]} blocks of held-out documents. Model: hidden {size['hidden']}, "
            f"{size['layers']} layers, {size['heads']} heads, FFN widths {list(widths.values())}. "
            f"Training time: joint {seconds['joint']:.0f}s, independent S+M+L+XL "
            f"{sum(seconds[n] for n in NAMES):.0f}s.")
        log()
        log("| model | parameters | val loss (MatFormer, joint) | val loss (independent) | gap |")
        log("| --- | ---: | ---: | ---: | ---: |")
        nested_loss = {}
        for name in NAMES:
            joint.set_granularity(name)
            nested_loss[name] = val_loss(joint, val)
            ind = val_loss(independent[name], val)
            gap = (nested_loss[name] - ind) / ind * 100
            log(f"| {name.upper()} | {joint.num_parameters_at(name):,} | {nested_loss[name]:.4f} | {ind:.4f} | {gap:+.2f}% |")
        joint.set_granularity(None)
        mixed = [c for c in mix_n_match_configurations(joint) if len(set(c.names)) > 1]
        for cand in mixed:
            joint.set_granularity(cand.names)
            log(f"| Mix'n'Match {cand.label} | {cand.num_parameters:,} | {val_loss(joint, val):.4f} | | |")
        joint.set_granularity(None)
        monotone = all(nested_loss[a] >= nested_loss[b] for a, b in zip(NAMES, NAMES[1:]))
        within = {n: (nested_loss[n] - val_loss(independent[n], val)) / val_loss(independent[n], val) * 100 for n in NAMES}
        log()
        log(f"Target loss(S) >= loss(M) >= loss(L) >= loss(XL): {'met' if monotone else 'NOT met'}. "
            f"Target each nested size within 3% of its independent twin: "
            f"{'met' if all(g <= 3 for g in within.values()) else 'NOT met'} "
            f"({', '.join(f'{n.upper()} {g:+.2f}%' for n, g in within.items())}).")
        log()


    if args.accuracy_only:
        log(f"Machine load average at the end: {fmt_load()}.")
        write_section(lines, q)
        return

    # -- 2. latency of extracted sizes ---------------------------------------------------------------------
    # At hidden 128 a decoding step is mostly Python and kernel-launch overhead, whatever the FFN width; the
    # paper's speed-ups assume matrix products dominate. So parts 2 and 3 also train (jointly, same batches,
    # same recipe) a hidden-512 MatLM, whose XL FFN (2048) is 4x its hidden size as in Llama-style models.
    decoders = {}
    if joint is not None:
        decoders[f"hidden {size['hidden']} (part 1's joint model, {size['steps']} steps)"] = joint.eval()
    torch.manual_seed(args.seed)
    wide = MatFormerForCausalLM(config(hidden_size=512, num_attention_heads=8, granularity_loss_weights=[0.25] * 4))
    t = train_model(wide, batches[: size["decode_steps"]], size["lr"])
    wide_label = f"hidden 512 (joint, {size['decode_steps']} steps)"
    decoders[wide_label] = wide.eval()
    wide_widths = "/".join(str(w) for w in wide.config.granularities)
    log(f"Decoding model: hidden 512, {size['layers']} layers, 8 heads, FFN widths {wide_widths}, trained jointly "
        f"for {size['decode_steps']} steps on the same batches ({t:.0f}s); validation loss "
        + ", ".join(f"{n.upper()} {val_loss(wide.set_granularity(n), val):.3f}" for n in NAMES) + ".")
    wide.set_granularity(None)
    log()
    prompt = val[:1, :32]
    s_decode, extracted = {}, {}
    for label, model in decoders.items():
        extracted[label] = {name: model.extract_submodel(name).eval() for name in NAMES}
        log(f"Latency of the extracted models, {label} (load average {fmt_load()}; medians of {size['repeats']} "
            f"interleaved repeats; forward = one pass over 8 x {size['seq']} tokens; decode = greedy "
            f"{size['new_tokens']} new tokens, batch 1, KV cache):")
        log()
        s_decode[label] = latency_table(extracted[label], val[:8], prompt, size, log)
        log()

    # -- 3. self-speculative decoding ----------------------------------------------------------------------
    settings = [("assisted, S draft (transformers defaults)", {}),
                ("assisted, S draft, 4 tokens/round, no confidence stop",
                 dict(num_assistant_tokens=4, assistant_confidence_threshold=0.0))]
    prompts = [val[i : i + 1, :32] for i in range(4)]
    best, identical_all = {}, True
    for label, model in decoders.items():
        log(f"Self-speculative decoding, {label} (load average {fmt_load()}): XL greedy vs assisted generation "
            f"with the extracted S model as draft, {size['new_tokens']} new tokens, batch 1, prompts = first 32 "
            f"tokens of 4 validation blocks, medians of {size['repeats']} interleaved repeats:")
        log()
        log("| decoding | tokens/s | speed-up | identical output | acceptance rate |")
        log("| --- | ---: | ---: | --- | ---: |")
        draft = extracted[label]["s"]
        plain_tps, spec_tps = [], {name: [] for name, _ in settings}
        identical = {name: True for name, _ in settings}
        accepted = {name: [0, 0] for name, _ in settings}
        for _ in range(size["repeats"]):
            for p in prompts:
                start = time.perf_counter()
                with torch.no_grad():
                    ref = model.generate(p, max_new_tokens=size["new_tokens"], do_sample=False)
                plain_tps.append(size["new_tokens"] / (time.perf_counter() - start))
                for name, kw in settings:
                    out, stats = self_speculative_generate(model, p, draft_model=draft,
                                                           max_new_tokens=size["new_tokens"], **kw)
                    spec_tps[name].append(stats.tokens_per_second)
                    identical[name] &= torch.equal(out, ref)
                    accepted[name][0] += stats.accepted
                    accepted[name][1] += stats.proposed
        base = statistics.median(plain_tps)
        log(f"| XL greedy | {base:.1f} | 1.00x | (reference) | |")
        for name, _ in settings:
            tps = statistics.median(spec_tps[name])
            a, n = accepted[name]
            log(f"| {name} | {tps:.1f} | {tps / base:.2f}x | {'yes' if identical[name] else 'NO'} | {a / max(n, 1):.2f} |")
        best[label] = max(statistics.median(v) for v in spec_tps.values()) / base
        identical_all &= all(identical.values())
        log()
    log("Target S decodes >= 1.5x faster than XL: "
        + "; ".join(f"{label} {v:.2f}x ({'met' if v >= 1.5 else 'NOT met'})" for label, v in s_decode.items())
        + ". Target self-speculative decoding faster than greedy with identical output: "
        + "; ".join(f"{label} best {v:.2f}x ({'met' if v > 1 and identical_all else 'NOT met'})" for label, v in best.items())
        + f"; outputs identical: {'yes' if identical_all else 'NO'}.")
    log()
    log(f"Machine load average at the end: {fmt_load()}.")
    write_section(lines, q)


def latency_table(models, batch, prompt, size, log) -> float:
    """Forward and decoding latency of ``models`` (name -> extracted model); returns S's decode speed-up."""
    log("| model | parameters | forward ms | forward speed-up vs XL | decode tokens/s | decode speed-up vs XL |")
    log("| --- | ---: | ---: | ---: | ---: | ---: |")
    fwd = {n: [] for n in models}
    dec = {n: [] for n in models}
    with torch.no_grad():
        for m in models.values():  # warm-up
            m(batch)
            m.generate(prompt, max_new_tokens=4, do_sample=False)
        for _ in range(size["repeats"]):
            for name, m in models.items():
                start = time.perf_counter()
                m(batch)
                fwd[name].append((time.perf_counter() - start) * 1000)
                start = time.perf_counter()
                m.generate(prompt, max_new_tokens=size["new_tokens"], do_sample=False)
                dec[name].append(size["new_tokens"] / (time.perf_counter() - start))
    f_xl, d_xl = statistics.median(fwd["xl"]), statistics.median(dec["xl"])
    for name, m in models.items():
        f, d = statistics.median(fwd[name]), statistics.median(dec[name])
        log(f"| {name.upper()} | {m.num_parameters():,} | {f:.1f} | {f_xl / f:.2f}x | {d:.1f} | {d / d_xl:.2f}x |")
    return statistics.median(dec["s"]) / d_xl


def train_model(model, batches, lr) -> float:
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.01)
    steps = len(batches)
    warmup = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / max(1, steps - warmup)))
    )
    start = time.perf_counter()
    for x in batches:
        loss = model(input_ids=x, labels=x).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    return time.perf_counter() - start


@torch.no_grad()
def val_loss(model, val, batch=16) -> float:
    model.eval()
    total = 0.0
    for i in range(0, val.shape[0], batch):
        x = val[i : i + batch]
        total += float(model(input_ids=x, labels=x).loss) * x.shape[0]
    return total / val.shape[0]


def fmt_load() -> str:
    return "/".join(f"{v:.1f}" for v in os.getloadavg())


def write_section(lines, quick: bool) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    heading = lines[0]
    old = RESULTS.read_text() if RESULTS.exists() else "# MatFormer benchmark results\n"
    sections, current = [], []
    for line in old.splitlines():
        if line.startswith("## ") and current:
            sections.append(current)
            current = []
        current.append(line)
    if current:
        sections.append(current)
    kept = [s for s in sections if s[0] != heading]
    text = "\n".join("\n".join(s).rstrip() + "\n" for s in kept) + "\n" + "\n".join(lines).rstrip() + "\n"
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, RESULTS)
    print(f"wrote {RESULTS}", file=sys.stderr)


if __name__ == "__main__":
    main()
