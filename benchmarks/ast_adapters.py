"""Adapters vs LoRA vs full fine-tuning vs linear probing of a small pretrained AST on FSDD (unseen speakers).

    python benchmarks/ast_adapters.py [--quick] [--steps N] [--seeds S] [--repeats R]

Cappellazzo et al. 2023 compare these methods on an AudioSet-pretrained AST; here the backbone is the
recipe ``ast-adapter-fsdd``'s small AST pretrained on espeak-ng words (cached under ~/.cache/hf_plugins), and
the task is the Free Spoken Digit Dataset split by speaker. Every method trains the same number of steps on the
same batches (AdamW, the paper's per-method learning rates, 10 % warm-up, cosine), then:

* accuracy on the test speakers (mean over seeds) and on the validation speaker;
* trainable parameters (adapters / LoRA also train the head and the layer norms, as in the paper);
* step time (forward + backward + AdamW), timed for all methods interleaved in this one process, several
  repeats, median, and its ratio to full fine-tuning;
* training memory: weights + gradients + AdamW state + activations saved for backward (summed with
  ``torch.autograd.graph.saved_tensors_hooks``, unique storages), since CPU peak-RSS cannot separate methods
  that run in one process.

Prints a markdown table and writes its section to benchmarks/results/ast_adapters.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hf_plugins  # noqa: E402,F401
from hf_plugins.recipes.ast_adapters import (  # noqa: E402
    LEARNING_RATES,
    SIZES,
    build_method_model,
    count_parameters,
    fsdd_datasets,
    pretrained_backbone,
)
from transformers import get_cosine_schedule_with_warmup  # noqa: E402

# (row name, recipe method, adapter mode, LoRA rank)
RUNS = [
    ("full fine-tuning", "full", None, None),
    ("linear probing", "linear", None, None),
    ("LoRA (W_q, W_v)", "lora", None, None),
    ("LoRA (W_q, W_v), r=12", "lora", None, 12),
    ("Pfeiffer sequential", "pfeiffer", "sequential", None),
    ("Pfeiffer parallel", "pfeiffer", "parallel", None),
    ("Houlsby sequential", "houlsby", "sequential", None),
    ("Houlsby parallel", "houlsby", "parallel", None),
    ("Conformer adapter (Pfeiffer, parallel)", "conformer", None, None),
]
RESULTS = Path(__file__).resolve().parent / "results" / "ast_adapters.md"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer steps, one seed, fewer timing repeats")
    parser.add_argument("--steps", type=int, default=None, help="training steps per method (default 250; quick 100)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds per method (default 1)")
    parser.add_argument("--repeats", type=int, default=None, help="timing repeats (default 5; quick 3)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--reduction-factor", type=float, default=16.0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--tiny", action="store_true", help="smoke run: tiny backbone, 10 clips per speaker")
    parser.add_argument("--lr-grid", default=None, metavar="F,F,...",
                        help="per method, try the paper's learning rate times each factor (seed 0), keep the best on "
                             "the validation speaker, then train every seed with it (default: the paper's rates)")
    parser.add_argument("--lr", default=None, metavar="METHOD=LR,...",
                        help="fixed learning rates instead of the paper's, per method (full, lora, houlsby, ...) or per "
                             "method and placement (houlsby:parallel), e.g. rates an earlier --lr-grid run chose")
    parser.add_argument("--only", default=None,
                        help="comma-separated recipe methods to run (full fine-tuning always runs, as the reference)")
    args = parser.parse_args()
    steps = args.steps or (100 if args.quick else 250)
    seeds = args.seeds or 1
    repeats = args.repeats or (3 if args.quick else 5)
    torch.set_num_threads(args.threads)

    size = SIZES["tiny" if args.tiny else "small"]
    backbone = pretrained_backbone(size, seed=42)
    data = fsdd_datasets(backbone, per_speaker=size["per_speaker"])
    x_train = torch.from_numpy(data["train"].features)
    y_train = torch.from_numpy(data["train"].labels)

    runs = RUNS
    if args.only:
        keep = {"full", *args.only.split(",")}
        runs = [run for run in RUNS if run[1] in keep]
    factors = [float(f) for f in args.lr_grid.split(",")] if args.lr_grid else [1.0]
    fixed = parse_rates(args.lr)
    if fixed and len(factors) > 1:
        parser.error("--lr and --lr-grid exclude each other")
    rows, models = [], {}
    for name, method, mode, rank in runs:

        def fit(seed, lr):
            model, _ = build_method_model(method, backbone, mode=mode or "sequential",
                                          reduction_factor=args.reduction_factor, lora_rank=rank, seed=seed)
            train(model, x_train, y_train, steps, args.batch_size, seed, lr=lr)
            return model, accuracy(model, data["test"]), accuracy(model, data["validation"])

        lr, grid = fixed.get(f"{method}:{mode}", fixed.get(method, LEARNING_RATES[method])), {}
        first = None
        if len(factors) > 1:  # selection on the validation speaker only; the test speakers are not looked at
            for factor in factors:
                model, test, val = fit(0, LEARNING_RATES[method] * factor)
                grid[LEARNING_RATES[method] * factor] = val
                if first is None or val > first[2]:
                    first = (model, test, val)
            lr = max(grid, key=grid.get)
        test_acc, val_acc = [], []
        for seed in range(seeds):
            model, test, val = first if (seed == 0 and first is not None) else fit(seed, lr)
            test_acc.append(test)
            val_acc.append(val)
            models[name] = model
        trainable, total = count_parameters(models[name])
        rows.append(dict(name=name, method=method, trainable=trainable, total=total, test=test_acc, val=val_acc, lr=lr,
                         grid=grid))
        print(f"{name}: lr {lr:g} (val by lr {grid}) test {np.mean(test_acc):.4f} {test_acc} val {np.mean(val_acc):.4f} "
              f"trainable {trainable:,}", flush=True)

    # interleaved timing: every repeat times every method, so load changes hit all of them alike
    times = {r["name"]: [] for r in rows}
    generator = torch.Generator().manual_seed(0)
    batch = torch.randint(0, len(x_train), (args.batch_size,), generator=generator)
    xb, yb = x_train[batch], y_train[batch]
    optimizers = {r["name"]: torch.optim.AdamW([p for p in models[r["name"]].parameters() if p.requires_grad], lr=1e-6)
                  for r in rows}
    for name in times:  # warm-up
        step(models[name], optimizers[name], xb, yb)
    for _ in range(repeats):
        for name in times:
            start = time.perf_counter()
            for _ in range(3):
                step(models[name], optimizers[name], xb, yb)
            times[name].append((time.perf_counter() - start) / 3)
    for row in rows:
        row["step_ms"] = 1000 * statistics.median(times[row["name"]])
        row["memory_mib"] = training_memory(models[row["name"]], optimizers[row["name"]], xb, yb) / 2**20

    full = rows[0]
    load = os.getloadavg()
    header = (f"backbone: AST hidden {backbone['hidden_size']}, {backbone['num_hidden_layers']} layers, "
              f"{backbone['num_mel_bins']} mel x {backbone['max_length']} frames, pretrained {backbone['pretrain_steps']} "
              f"steps on {len(backbone['words'])} espeak-ng words (held-out acc {backbone['pretrain_accuracy']}); "
              f"FSDD train {len(data['train'])} / val {len(data['validation'])} / test {len(data['test'])} (unseen speakers); "
              f"{steps} steps x batch {args.batch_size}, {seeds} seed(s), adapter reduction factor {args.reduction_factor:g}; "
              + (f"learning rate per method chosen on the validation speaker (seed 0) among the paper's rate x "
                 f"{', '.join(f'{f:g}' for f in factors)}; " if len(factors) > 1
                 else f"learning rates {args.lr}, else the paper's; " if fixed else "the paper's learning rates; ")
              + f"torch {torch.__version__}, {args.threads} thread(s), load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")
    lines = [
        "| method | trainable params | % of full FT | learning rate | test acc (mean) | test acc per seed | val acc | step ms (median) | step vs full | train memory MiB |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['name']} | {row['trainable']:,} | {100 * row['trainable'] / full['trainable']:.2f} % | {row['lr']:g} | "
            f"{np.mean(row['test']):.4f} | {', '.join(f'{a:.4f}' for a in row['test'])} | {np.mean(row['val']):.4f} | "
            f"{row['step_ms']:.1f} | {row['step_ms'] / full['step_ms']:.2f} | {row['memory_mib']:.1f} |"
        )
    adapters = [r for r in rows if r["method"] in ("pfeiffer", "houlsby", "conformer")]
    best = max(adapters, key=lambda r: np.mean(r["test"])) if adapters else None
    loras = [r for r in rows if r["method"] == "lora"]
    verdict = "" if not adapters else (
        f"Best adapter: {best['name']}, {np.mean(best['test']):.4f} vs full FT {np.mean(full['test']):.4f} "
        f"({100 * (np.mean(best['test']) - np.mean(full['test'])):+.2f} points) with "
        f"{100 * best['trainable'] / full['trainable']:.2f} % of its trainable parameters"
        + "".join(f"; {r['name']} {np.mean(r['test']):.4f} with {r['trainable']:,} trainable parameters" for r in loras)
        + "." + paired_note(best, [full, *loras])
    )
    table = "\n".join(lines)
    command = "python benchmarks/ast_adapters.py " + " ".join(sys.argv[1:])
    print(header)
    print(table)
    print(verdict)
    if not args.no_write:
        write_section(command.strip(), header, table, verdict)


def paired_note(row, others) -> str:
    """Seed-paired differences (every method sees the same batches per seed): mean and standard error in points."""
    parts = []
    for other in others:
        diffs = 100 * (np.array(row["test"]) - np.array(other["test"]))
        if len(diffs) > 1:
            parts.append(f"{row['name']} minus {other['name']}: {diffs.mean():+.2f} points, standard error "
                         f"{diffs.std(ddof=1) / np.sqrt(len(diffs)):.2f}")
    return (" Paired by seed: " + "; ".join(parts) + ".") if parts else ""


def parse_rates(text: str | None) -> dict[str, float]:
    """``"full=3e-4,houlsby:parallel=5e-3"`` -> ``{"full": 3e-4, "houlsby:parallel": 5e-3}``; unknown methods fail."""
    rates = {}
    for item in filter(None, (text or "").split(",")):
        key, sep, value = item.partition("=")
        method, _, mode = key.strip().partition(":")
        if not sep or method not in LEARNING_RATES or mode not in ("", "sequential", "parallel"):
            raise SystemExit(f"--lr: cannot read {item!r}; expected METHOD[:sequential|parallel]=LR with METHOD one of "
                             f"{', '.join(LEARNING_RATES)}")
        try:
            rates[key.strip()] = float(value)
        except ValueError:
            raise SystemExit(f"--lr: {value!r} in {item!r} is not a number") from None
    return rates


def train(model, x, y, steps, batch_size, seed, lr: float) -> None:
    """AdamW(0.9, 0.98; eps 1e-6; wd 0.1) at ``lr``, 10 % warm-up then cosine."""
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=lr, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.1)
    scheduler = get_cosine_schedule_with_warmup(optimizer, max(1, steps // 10), steps)
    generator = torch.Generator().manual_seed(1000 + seed)  # the same batches for every method
    order = torch.randperm(len(x), generator=generator)
    position = 0
    model.train()
    for _ in range(steps):
        if position + batch_size > len(order):
            order, position = torch.randperm(len(x), generator=generator), 0
        index = order[position: position + batch_size]
        position += batch_size
        loss = model(input_values=x[index], labels=y[index]).loss
        loss.backward()
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    model.eval()


def step(model, optimizer, x, y) -> None:
    model.train()
    model(input_values=x, labels=y).loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


@torch.no_grad()
def accuracy(model, dataset) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(dataset), 256):
        x = torch.from_numpy(dataset.features[start:start + 256])
        correct += int((model(input_values=x).logits.argmax(-1).numpy() == dataset.labels[start:start + 256]).sum())
    return correct / len(dataset)


def training_memory(model, optimizer, x, y) -> int:
    """Bytes of weights + gradients + AdamW state + tensors saved for backward in one training step."""
    seen, saved = set(), [0]

    def pack(tensor):
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key not in seen:
            seen.add(key)
            saved[0] += storage.nbytes()
        return tensor

    weights = {p.data_ptr(): p.numel() * p.element_size() for p in model.parameters()}
    model.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(input_values=x, labels=y).loss
    loss.backward()
    grads = sum(p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None)
    optimizer.step()
    state = sum(v.numel() * v.element_size() for s in optimizer.state.values() for v in s.values()
                if torch.is_tensor(v) and v.dim() > 0)
    optimizer.zero_grad(set_to_none=True)
    return sum(weights.values()) + grads + state + saved[0]


def write_section(command: str, header: str, table: str, verdict: str) -> None:
    """Replace (or add) this command's section of benchmarks/results/ast_adapters.md, atomically."""
    title = f"## `{command}`"
    body = f"{title}\n\n{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {header}\n\n{table}\n\n{verdict}\n"
    text = RESULTS.read_text() if RESULTS.is_file() else (
        "# AST adapters on FSDD: adapters vs LoRA vs full fine-tuning vs linear probing\n\n"
        "Produced by `benchmarks/ast_adapters.py`; every figure below comes with the command that printed it.\n\n"
    )
    sections = text.split("\n## ")
    kept = [sections[0].rstrip() + "\n"] + ["## " + s.rstrip() + "\n" for s in sections[1:] if not ("## " + s).startswith(title)]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text("\n".join(kept + [body]))
    os.replace(tmp, RESULTS)


if __name__ == "__main__":
    main()
