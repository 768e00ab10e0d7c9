"""S²FT against peft LoRA and full fine-tuning: step time, peak memory, trainable parameters; and quality.

    python benchmarks/s2ft.py [--quick] [--device cpu|cuda] [--repeats N]      # speed and memory
    python benchmarks/s2ft.py --quality [--quick]                               # s2ft-legal: S2FT vs LoRA vs full

Speed: the Llama-style model of the issue (hidden 512, 8 layers, 8 heads, intermediate 1408, vocab 32000,
seq 256, batch 4; fp32 on CPU, bf16 weights on CUDA), AdamW, one step = forward + backward + optimizer step +
zero_grad. Full fine-tuning, peft LoRA (r=16, alpha 32, all seven linear layers of the blocks) and S²FT on W_o
heads + W_down channels sized to at most LoRA's trainable parameters. All three models live in one process
and their steps are interleaved (full, lora, s2ft, full, ...), 1 thread on CPU; medians of wall and CPU time.
Peak memory: on CPU the peak RSS of a fresh subprocess per method during its steps, minus its RSS after the
model and optimizer are built (``MALLOC_MMAP_THRESHOLD_=65536`` so freed tensors go back to the OS); on CUDA
``torch.cuda.max_memory_allocated``. ``--quick`` uses a smaller model.

Quality: ``hf-plugins train s2ft-legal`` with ``--method s2ft|lora|full`` at equal steps on one shared
pre-trained base; new-domain and old-domain (forgetting) test losses.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "s2ft.md"
FULL_SIZE = dict(hidden=512, layers=8, heads=8, kv_heads=8, inter=1408, vocab=32000, seq=256, batch=4)
QUICK_SIZE = dict(hidden=256, layers=4, heads=8, kv_heads=8, inter=704, vocab=8000, seq=128, batch=4)
METHODS = ("full", "lora", "s2ft")


def build(method: str, size: dict, device: str, dtype):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(ROOT))
    import hf_plugins  # noqa: F401
    from hf_plugins.recipes.s2ft import wrap

    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=size["hidden"], num_hidden_layers=size["layers"], num_attention_heads=size["heads"],
        num_key_value_heads=size["kv_heads"], intermediate_size=size["inter"], vocab_size=size["vocab"],
        max_position_embeddings=max(512, size["seq"]), tie_word_embeddings=False, use_cache=False,
    )
    model = LlamaForCausalLM(cfg).to(device=device, dtype=dtype)
    model = wrap(model, method, lora_r=16, o_share=0.4, seed=0)
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, size["vocab"], (size["batch"], size["seq"]), generator=g).to(device)

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.detach().item()

    return model, step, sum(p.numel() for p in params)


def sync(device):
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def bench_speed(size: dict, device: str, repeats: int) -> dict:
    """Interleaved step times of the three methods in this process."""
    import torch

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    runs = {m: build(m, size, device, dtype) for m in METHODS}
    wall = {m: [] for m in METHODS}
    cpu = {m: [] for m in METHODS}
    for m in METHODS:  # warm-up (allocates the optimizer state)
        runs[m][1]()
    sync(device)
    for _ in range(repeats):
        for m in METHODS:
            t0, c0 = time.perf_counter(), time.process_time()
            runs[m][1]()
            sync(device)
            wall[m].append(time.perf_counter() - t0)
            cpu[m].append(time.process_time() - c0)
    return {
        m: {"wall_s": statistics.median(wall[m]), "cpu_s": statistics.median(cpu[m]), "trainable": runs[m][2],
            "wall_all": wall[m]}
        for m in METHODS
    }


def memory_child(method: str, size: dict, device: str, steps: int) -> dict:
    """Run in a fresh process: peak memory of ``steps`` training steps of one method."""
    import torch

    dtype = torch.bfloat16 if device == "cuda" else torch.float32
    _, step, trainable = build(method, size, device, dtype)
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        return {"peak_mib": peak / 2**20, "over_model_mib": (peak - base) / 2**20, "trainable": trainable}
    page = os.sysconf("SC_PAGE_SIZE")

    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * page

    base = rss()
    peak = [base]
    done = threading.Event()

    def sampler():
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.002)

    thread = threading.Thread(target=sampler, daemon=True)
    thread.start()
    for _ in range(steps):
        step()
    done.set()
    thread.join()
    peak[0] = max(peak[0], rss())
    return {"peak_mib": peak[0] / 2**20, "over_model_mib": (peak[0] - base) / 2**20, "trainable": trainable}


def bench_memory(size: dict, device: str, steps: int = 2) -> dict:
    out = {}
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS="1")
    for m in METHODS:
        code = (
            f"import json, sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); import torch; torch.set_num_threads(1); "
            f"import s2ft as b; print('RESULT', json.dumps(b.memory_child({m!r}, {size!r}, {device!r}, {steps})))"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
        if proc.returncode or not line:
            raise RuntimeError(f"memory run of {m} failed:\n{proc.stderr[-2000:]}")
        out[m] = json.loads(line[-1][7:])
    return out


def speed_section(args) -> str:
    import torch

    torch.set_num_threads(1)
    size = QUICK_SIZE if args.quick else FULL_SIZE
    load_before = os.getloadavg()
    mem = bench_memory(size, args.device)
    speed = bench_speed(size, args.device, args.repeats)
    load_after = os.getloadavg()
    command = "python benchmarks/s2ft.py" + (" --quick" if args.quick else "") + (
        f" --device {args.device}" if args.device != "cpu" else "") + f" --repeats {args.repeats}"
    lines = [
        f"### Speed and memory ({args.device}, {'quick' if args.quick else 'issue'} size)",
        "",
        f"Command: `{command}`  ",
        f"Model: Llama hidden {size['hidden']}, {size['layers']} layers, {size['heads']} heads "
        f"({size['kv_heads']} KV), intermediate {size['inter']}, vocab {size['vocab']}, seq {size['seq']}, "
        f"batch {size['batch']}; {'bf16' if args.device == 'cuda' else 'fp32'}, AdamW; "
        f"{'1 thread, ' if args.device == 'cpu' else ''}{args.repeats} interleaved steps per method after one "
        f"warm-up step.  ",
        f"Machine load (1/5/15 min) before: {load_before[0]:.1f}/{load_before[1]:.1f}/{load_before[2]:.1f}, "
        f"after: {load_after[0]:.1f}/{load_after[1]:.1f}/{load_after[2]:.1f}; torch {torch.__version__}.",
        "",
        "| method | trainable params | median wall s/step | median CPU s/step | wall vs LoRA | "
        + ("peak RSS MiB | RSS over model MiB | memory vs LoRA |" if args.device == "cpu" else
           "peak allocated MiB | over model MiB | memory vs LoRA |"),
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for m in METHODS:
        s, r = speed[m], mem[m]
        lines.append(
            f"| {m} | {s['trainable']:,} | {s['wall_s']:.3f} | {s['cpu_s']:.3f} | "
            f"{s['wall_s'] / speed['lora']['wall_s']:.2f}x | {r['peak_mib']:.0f} | {r['over_model_mib']:.0f} | "
            f"{r['over_model_mib'] / mem['lora']['over_model_mib']:.2f}x |"
        )
    ratio_t = speed["s2ft"]["wall_s"] / speed["lora"]["wall_s"]
    ratio_c = speed["s2ft"]["cpu_s"] / speed["lora"]["cpu_s"]
    ratio_m = mem["s2ft"]["over_model_mib"] / mem["lora"]["over_model_mib"]
    lines += [
        "",
        f"S2FT / LoRA: step time {ratio_t:.2f}x wall, {ratio_c:.2f}x CPU (target <= 0.85x); memory over the model "
        f"{ratio_m:.2f}x (target <= 0.90x); trainable parameters "
        f"{speed['s2ft']['trainable'] / speed['lora']['trainable']:.2f}x.",
        "",
        "All wall times (s): " + "; ".join(f"{m}: " + ", ".join(f"{t:.2f}" for t in speed[m]["wall_all"]) for m in METHODS),
        "",
    ]
    return "\n".join(lines)


def quality_section(args) -> str:
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(args.threads)
    import hf_plugins  # noqa: F401
    from hf_plugins.recipes import run_recipe

    work = Path(args.work_dir)
    base_dir = work / "base"
    extra = ["--tiny"] if args.quick else []
    steps = args.steps or (5 if args.quick else 300)
    rows = {}
    load_before = os.getloadavg()
    for m in METHODS:
        argv = [*extra, "--method", m, "--max-steps", str(steps), "--seed", "42", "--base-dir", str(base_dir),
                "--output-dir", str(work / m)]
        if args.pretrain_steps is not None:
            argv += ["--pretrain-steps", str(args.pretrain_steps)]
        argv += args.recipe_args.split()
        out = run_recipe("s2ft-legal", argv)
        rows[m] = json.loads((Path(out) / "metrics.json").read_text())["test"]
    load_after = os.getloadavg()
    b = rows["full"]
    pre = f" --pretrain-steps {args.pretrain_steps}" if args.pretrain_steps is not None else ""
    pre += f" {args.recipe_args}" if args.recipe_args else ""
    command = "python benchmarks/s2ft.py --quality" + (" --quick" if args.quick else "") + f" --steps {steps}" + (
        f" --tag {args.tag}" if args.tag else "") + (
        f" --pretrain-steps {args.pretrain_steps}" if args.pretrain_steps is not None else "") + (
        f" --recipe-args '{args.recipe_args}'" if args.recipe_args else "")
    lines = [
        f"### Quality: `s2ft-legal` ({'tiny' if args.quick else 'default' if not args.recipe_args else 'custom'} "
        f"size), {steps} fine-tuning steps each",
        "",
        f"Command: `{command}` (runs `hf-plugins train s2ft-legal --method M --max-steps {steps} --seed 42 "
        f"--base-dir DIR{pre}{' --tiny' if args.quick else ''}` for M in full, lora, s2ft on one pre-trained base).  ",
        "Old domain = Permissive/Copyleft/Copyleft Limited licences (pre-training), new domain = Proprietary "
        "Free/Commercial EULAs and terms (fine-tuning); test-split next-token losses.  ",
        f"Base model before fine-tuning: new-domain loss {b['new_domain_loss_before']:.4f}, old-domain loss "
        f"{b['old_domain_loss_before']:.4f}. Machine load before/after: {load_before[0]:.1f}/{load_after[0]:.1f}.",
        "",
        "| method | trainable params | new-domain test loss | old-domain test loss | forgetting (old after - before) |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in METHODS:
        r = rows[m]
        lines.append(f"| {m} | {int(r['trainable_parameters']):,} | {r['new_domain_loss']:.4f} | "
                     f"{r['old_domain_loss']:.4f} | {r['forgetting']:+.4f} |")
    lines.append("")
    return "\n".join(lines)


def write_section(name: str, text: str) -> None:
    """Replace (or add) section ``name`` of benchmarks/results/s2ft.md, written to a temp file then renamed."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    old = RESULTS.read_text() if RESULTS.exists() else "## S²FT (peft method) vs peft LoRA and full fine-tuning\n\n"
    start, end = f"<!-- {name} -->\n", f"<!-- /{name} -->\n"
    block = start + text + end
    if start in old and end in old:
        new = old[: old.index(start)] + block + old[old.index(end) + len(end):]
    else:
        new = old + block + "\n"
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text(new)
    tmp.replace(RESULTS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smaller sizes")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quality", action="store_true", help="run the s2ft-legal quality comparison instead")
    parser.add_argument("--steps", type=int, default=None, help="fine-tuning steps of the quality comparison")
    parser.add_argument("--pretrain-steps", type=int, default=None, help="pre-training steps of the shared base")
    parser.add_argument("--recipe-args", default="", help="extra options for s2ft-legal, e.g. '--hidden-size 128'")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--tag", default="", help="suffix of the results section (keeps earlier runs)")
    parser.add_argument("--work-dir", default=os.path.join("outputs", "s2ft-quality"))
    args = parser.parse_args()
    if args.quality:
        text = quality_section(args)
        name = ("quality-quick" if args.quick else "quality") + (f"-{args.tag}" if args.tag else "")
    else:
        text = speed_section(args)
        name = f"speed-{args.device}" + ("-quick" if args.quick else "")
    print(text)
    write_section(name, text)


if __name__ == "__main__":
    main()
