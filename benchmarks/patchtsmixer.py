"""HybridPatchTSMixer against transformers' PatchTSMixer and PatchTST (flatten head): step time and memory.

    python benchmarks/patchtsmixer.py [--quick]          # speed + memory section of results/patchtsmixer.md
    python benchmarks/patchtsmixer.py --collect DIR...   # accuracy section from `hf-plugins train` folders

Setting (issue 4): context 512 -> horizon 96, batch 32, 7 channels, one training step (forward + MSE
loss + backward, train mode, no optimizer), 1 thread. All models are timed interleaved in ONE process
(round r times every model once), several rounds, medians; ratios are taken against the plain
backbone and against PatchTST. Memory: bytes saved for backward (unique storages seen by
``saved_tensors_hooks``; deterministic) and the peak-RSS growth of one step in a fresh process.

Models: PatchTSMixer as in the paper (patch 16, stride 8, d_model 16, 8 layers, expansion 2); ours with
each head on/off on the same backbone; PatchTST/64 as in its paper (patch 16, stride 8, d_model 128,
3 layers, 16 heads, ffn 256) with the flatten head (``pooling_type=None``), not HF's default mean pooling.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "patchtsmixer.md"
CONTEXT, HORIZON, BATCH, CHANNELS = 512, 96, 32, 7
MIXER = dict(context_length=CONTEXT, prediction_length=HORIZON, num_input_channels=CHANNELS, patch_length=16,
             patch_stride=8, d_model=16, num_layers=8, expansion_factor=2, dropout=0.2, head_dropout=0.2,
             mode="common_channel", scaling="std")
MODELS = [
    "PatchTSMixer (transformers)",
    "ours, no heads",
    "ours, cross-channel head",
    "ours, hierarchy head",
    "ours, both heads",
    "ours, both heads, V-TSMixer (flatten)",
    "PatchTST/64, flatten head",
]


def build(name: str):
    torch.manual_seed(0)
    if name == "PatchTSMixer (transformers)":
        from transformers import PatchTSMixerConfig, PatchTSMixerForPrediction

        return PatchTSMixerForPrediction(PatchTSMixerConfig(**MIXER))
    if name.startswith("ours"):
        import hf_plugins  # noqa: F401
        from hf_plugins import HybridPatchTSMixerConfig, HybridPatchTSMixerForPrediction

        cfg = dict(MIXER, use_cross_channel_head="cross" in name or "both" in name,
                   use_hierarchy_head="hierarchy" in name or "both" in name)
        if "flatten" in name:
            cfg["mode"] = "flatten"
        return HybridPatchTSMixerForPrediction(HybridPatchTSMixerConfig(**cfg))
    if name.startswith("PatchTST"):
        from transformers import PatchTSTConfig, PatchTSTForPrediction

        return PatchTSTForPrediction(PatchTSTConfig(
            num_input_channels=CHANNELS, context_length=CONTEXT, prediction_length=HORIZON, patch_length=16,
            patch_stride=8, d_model=128, num_hidden_layers=3, num_attention_heads=16, ffn_dim=256, dropout=0.2,
            head_dropout=0.2, pooling_type=None, scaling="std"))
    raise KeyError(name)


def make_batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(BATCH, CONTEXT, CHANNELS, generator=g), torch.randn(BATCH, HORIZON, CHANNELS, generator=g)


def step(model, past, future):
    loss = model(past_values=past, future_values=future).loss
    loss.backward()
    model.zero_grad(set_to_none=True)


def saved_bytes(model, past, future) -> int:
    seen = {}

    def pack(t):
        storage = t.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss = model(past_values=past, future_values=future).loss
    loss.backward()
    model.zero_grad(set_to_none=True)
    return sum(seen.values())


def child_peak_rss(name: str) -> float:
    """Peak-RSS growth (MB) of one training step of ``name`` in a fresh process."""
    out = subprocess.run([sys.executable, __file__, "--child", name], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def run_child(name: str) -> None:
    torch.set_num_threads(1)
    model = build(name).train()
    past, future = make_batch()
    with torch.no_grad():
        model(past_values=past)  # allocator warm-up outside the measured step
    before = _proc_status("VmRSS")
    with open("/proc/self/clear_refs", "w") as fh:  # reset the peak-RSS counter (VmHWM) to the current RSS
        fh.write("5")
    step(model, past, future)
    print((_proc_status("VmHWM") - before) / 1024)


def _proc_status(key: str) -> int:
    """A kB field of /proc/self/status (Linux)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def speed(quick: bool) -> str:
    torch.set_num_threads(1)
    rounds = 5 if quick else 15
    load_before = os.getloadavg()
    models = {name: build(name).train() for name in MODELS}
    past, future = make_batch()
    wall = {n: [] for n in MODELS}
    cpu = {n: [] for n in MODELS}
    for name, model in models.items():  # warm-up
        step(model, past, future)
    for _ in range(rounds):
        for name, model in models.items():
            t0, c0 = time.perf_counter(), time.process_time()
            step(model, past, future)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    saved = {n: saved_bytes(m, past, future) / 2**20 for n, m in models.items()}
    rss = {n: child_peak_rss(n) for n in MODELS}
    load_after = os.getloadavg()

    med = {n: statistics.median(cpu[n]) for n in MODELS}
    medw = {n: statistics.median(wall[n]) for n in MODELS}
    base, tst = "ours, no heads", "PatchTST/64, flatten head"
    rows = [
        "| model | params | CPU ms/step (median) | wall ms/step (median) | x plain backbone (CPU) | PatchTST / model (CPU) "
        "| saved for backward MB | PatchTST / model (saved) | peak RSS growth MB |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for n in MODELS:
        params = sum(p.numel() for p in models[n].parameters())
        rows.append(
            f"| {n} | {params:,} | {1000 * med[n]:.1f} | {1000 * medw[n]:.1f} | {med[n] / med[base]:.3f} | "
            f"{med[tst] / med[n]:.2f} | {saved[n]:.1f} | {saved[tst] / saved[n]:.2f} | {rss[n]:.0f} |"
        )
    head_overhead = {n: med[n] / med[base] - 1 for n in MODELS if n.startswith("ours") and "flatten" not in n}
    cmd = "python benchmarks/patchtsmixer.py" + (" --quick" if quick else "")
    lines = [
        f"Command: `{cmd}` ({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; torch {torch.__version__}, "
        f"1 thread, {rounds} interleaved rounds after a warm-up; load average {load_before[0]:.1f} before, "
        f"{load_after[0]:.1f} after, on a shared 2-core VM, so absolute times are noisy, ratios less so).",
        "",
        f"Setting: context {CONTEXT} -> horizon {HORIZON}, batch {BATCH}, {CHANNELS} channels, one forward + MSE loss + "
        "backward in train mode. PatchTSMixer/ours: patch 16, stride 8, d_model 16, 8 layers, expansion 2. PatchTST/64: "
        "patch 16, stride 8, d_model 128, 3 layers, 16 heads, ffn 256, `pooling_type=None` (flatten head).",
        "",
        *rows,
        "",
        "Targets (issue 4): heads cost at most 15 % over the plain backbone: "
        + ", ".join(f"{n.split(', ', 1)[1]} {100 * v:+.1f} %" for n, v in head_overhead.items())
        + f"; whole model (both heads) at least 2x cheaper than PatchTST: time {med[tst] / med['ours, both heads']:.2f}x, "
        f"saved activations {saved[tst] / saved['ours, both heads']:.2f}x, peak RSS growth "
        f"{rss[tst] / max(rss['ours, both heads'], 1e-9):.2f}x. Ours with no heads vs transformers' PatchTSMixer: "
        f"{med[base] / med['PatchTSMixer (transformers)']:.3f}x CPU time (same computation).",
    ]
    return "\n".join(lines)


# args that metrics.json records but that are not recipe options (or are given separately in the command)
NOT_OPTIONS = ("data_dir", "output_dir", "max_steps", "seed", "pretrained", "push_to_hub", "backbone_pretraining",
               "linear_probe_frozen")
OLD_PROBE_MARK = ", clipped with the backbone"
OLD_PROBE_NOTE = (f"Steps marked \"{OLD_PROBE_MARK[2:]}\": linear probing as the recipe did it until 2026-11-29, which "
                  "dropped the backbone's gradients only after gradient clipping (max norm 1) had counted them, so the "
                  "heads' steps were scaled down more; the recipe now freezes the backbone, and these commands no longer "
                  "reproduce those runs bit for bit.")


def collect(folders: list[str]) -> str:
    """Accuracy table from folders written by ``hf-plugins train patchtsmixer-etth1``."""
    rows = ["| recipe | horizon | heads | mode | pretrain steps | steps | lr | seed | test MSE | test MAE "
            "| naive (last value) MSE | naive (previous day) MSE | best val MSE at step | command |",
            "| --- | ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    entries = []
    for folder in folders:
        path = Path(folder) / "metrics.json"
        if not path.is_file():
            print(f"skipping {folder}: no metrics.json", file=sys.stderr)
            continue
        m = json.loads(path.read_text())
        a, t = m["args"], m["test"]
        evals = [(e["step"], e["eval_mse"]) for e in m.get("log_history", []) if "eval_mse" in e]
        best = min(evals, key=lambda x: x[1]) if evals else (None, float("nan"))
        options = " ".join(  # every recipe option as it was given, so the command reproduces the run
            f"--{k.replace('_', '-')}" + ("" if v is True else f" {v}") for k, v in a.items()
            if k not in NOT_OPTIONS and v is not None and v is not False
        )
        day = f"{t['naive_previous_day_mse']:.4f}" if "naive_previous_day_mse" in t else "-"
        command = f"hf-plugins train {m['recipe']} --max-steps {m['max_steps']} --seed {m['seed']} {options}"
        # runs that differ only in their heads (and seed) are compared with each other
        backbone = (f"{a.get('mode')}, d_model {a.get('d_model')}, {a.get('num_layers')} layers, "
                    f"patch {a.get('patch_length')}/{a.get('patch_stride')}")
        pretrain = a.get("pretrain_steps") or 0
        pretrain_lr = (a.get("pretrain_learning_rate") or a.get("learning_rate")) if pretrain else None  # as the recipe
        pretrained = f" after {pretrain} masked pretraining steps at lr {pretrain_lr:g}" if pretrain else ""
        loaded = a.get("backbone_pretraining") or {}  # --pretrained-backbone: a patchtsmixer-etth1-pretrain folder
        if loaded.get("steps"):
            pretrain = f"{loaded['steps']} ({loaded['folder']})"
            pretrained = (f" from one backbone pretrained for {loaded['steps']} steps at lr {loaded['learning_rate']:g} "
                          f"({loaded['folder']})")
        probe = a.get("linear_probe_steps")
        probe_text = f" ({probe} heads only{'' if a.get('linear_probe_frozen') else OLD_PROBE_MARK})" if probe else ""
        steps = f"{m['max_steps']}{probe_text}"
        steps_text = f"{m['max_steps']} steps{probe_text}"
        setting = (m["recipe"], a.get("horizon"), backbone, pretrain, steps_text, a.get("learning_rate"), pretrained)
        heads = a.get("heads")
        if heads != "none" and a.get("reconciliation_dropout"):
            heads += f" (reconciliation dropout {a['reconciliation_dropout']:g})"
        if heads.startswith(("hier", "both")) and a.get("hierarchy_consistency", "reconciled") == "reconciled":
            heads += " (consistency on the reconciled forecast)"  # the recipe's only choice until 2026-11-29
        entries.append((setting, heads, m["seed"], t["test_mse"],
                        f"| {m['recipe']} | {a.get('horizon')} | {heads} | {a.get('mode')} | {pretrain} | "
                        f"{steps} | {a.get('learning_rate'):g} | {m['seed']} | {t['test_mse']:.4f} | {t['test_mae']:.4f} | "
                        f"{t['naive_last_value_mse']:.4f} | {day} | {best[1]:.4f} @ {best[0]} | `{command}` |"))
    entries.sort(key=lambda e: (str(e[0]), str(e[1]), e[2]))
    rows += [e[-1] for e in entries]
    return "\n".join([
        f"Collected with `python benchmarks/patchtsmixer.py --collect {' '.join(folders)}` "
        f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}). Test split, standardised scale; "
        "patchtsmixer-etth1 is the standard ETTh1 split at context 512. The weights with the lowest "
        "validation MSE (validation every `--eval-every` steps) are the ones tested. References: IBM's PatchTSMixer checkpoint 0.370 (H=96); the paper's best TSMixer "
        "0.368 (96) / 0.399 (192).",
        "",
        *rows,
        "",
        *([OLD_PROBE_NOTE, ""] if any(OLD_PROBE_MARK in e[0][4] for e in entries) else []),
        *_heads_vs_plain(entries),
    ])


def _heads_vs_plain(entries) -> list[str]:
    """One line per setting with heads: its test MSE against the plain backbone's, paired by seed."""
    by = {}
    for setting, heads, seed, mse, _ in entries:
        by.setdefault(setting, {}).setdefault(heads, {})[seed] = mse
    notes = []
    for (recipe, horizon, backbone, _, steps_text, lr, pretrained), runs in sorted(by.items(), key=str):
        plain = runs.get("none", {})
        for heads, by_seed in sorted(runs.items()):
            seeds = sorted(set(by_seed) & set(plain))
            if heads == "none" or not seeds:
                continue
            ours = statistics.mean(by_seed[s] for s in seeds)
            base = statistics.mean(plain[s] for s in seeds)
            seed_text = f"seed {seeds[0]}" if len(seeds) == 1 else f"mean of seeds {', '.join(map(str, seeds))}"
            notes.append(f"- {recipe} H={horizon} ({backbone}), {steps_text} at lr {lr:g}{pretrained}, {seed_text}: "
                         f"heads `{heads}` {ours:.4f} vs plain backbone {base:.4f} ({100 * (ours / base - 1):+.2f} %).")
    return notes


def write_section(key: str, title: str, body: str) -> None:
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    text = RESULTS.read_text() if RESULTS.is_file() else "# TSMixer (HybridPatchTSMixer)\n"
    block = f"<!-- {key} -->\n## {title}\n\n{body}\n<!-- /{key} -->"
    pattern = re.compile(rf"<!-- {key} -->.*?<!-- /{key} -->", re.S)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else text.rstrip() + "\n\n" + block + "\n"
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, RESULTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    parser.add_argument("--collect", nargs="+", metavar="DIR", help="write the accuracy section from these run folders")
    parser.add_argument("--no-write", action="store_true", help="print only; leave benchmarks/results untouched")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args.child)
        return
    if args.collect:
        key, title, body = "accuracy", "Accuracy on ETTh1 (test MSE)", collect(args.collect)
    else:
        key, title, body = "speed", "Step time and memory (context 512 -> 96, batch 32, 7 channels)", speed(args.quick)
    print(body)
    if not args.no_write:
        write_section(key, title, body)


if __name__ == "__main__":
    main()
