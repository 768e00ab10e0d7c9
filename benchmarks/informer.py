"""InformerLSTF against transformers' InformerForPrediction: time and peak memory, in one process.

    python benchmarks/informer.py                  # attention alone + whole model, issue sizes
    python benchmarks/informer.py --quick          # smaller sizes, fewer repeats
    python benchmarks/informer.py --part model --model-sizes 96:24,336:96
    python benchmarks/informer.py --accuracy outputs/informer-h24 outputs/informer-h48   # tabulate runs
    python benchmarks/informer.py --accuracy outputs/informer-h168 --reference-log informer2020_h168.log
    python benchmarks/informer.py --reference-parity ~/src/Informer2020   # same weights, same outputs?

Both implementations run interleaved (ours, anchor, ours, anchor...) in this process with the same sizes,
the same inputs and the same thread count; the figures are medians over the repeats. Each forward+backward
is timed in wall-clock and process CPU seconds (CPU time is less disturbed by other jobs on a shared
machine). Peak memory is the high-water mark of the tensor storage created during one separate
forward+backward (activations, temporaries, gradients; not the parameters and inputs made before),
tracked op by op with a TorchDispatchMode.

Attention alone: d_model 512, 8 heads, batch 8, fwd+bwd of one self-attention layer (projections
included): ours (ProbSparse, shared and per-query key samples) vs ``InformerProbSparseAttention``.
Whole model: the paper's ETTh1 size (d_model 512, 8 heads, 2 encoder + 1 decoder layers, d_ff 2048,
factor 5, distilling), batch 32, 7 channels, 4 time features, fwd+bwd of the training loss: ours (MSE
head, label_length 48) vs ``InformerForPrediction`` (Student-t NLL, teacher-forced decoder, lags [1]).

Results go to stdout and to the section of this command in ``benchmarks/results/informer.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten
from torch.utils.flop_counter import FlopCounterMode

RESULTS = Path(__file__).resolve().parent / "results" / "informer.md"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and 2 repeats")
    parser.add_argument("--part", choices=("attention", "core", "model", "all"), default="all",
                        help="attention layer, attention core (no projections), whole model, or all three")
    parser.add_argument("--lengths", default=None, help="attention lengths, e.g. 96,384,1536,3072")
    parser.add_argument("--model-sizes", default=None, help="context:horizon list, e.g. 96:24,336:96,720:720")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--accuracy", nargs="+", default=None, metavar="RUN_DIR",
                        help="instead: tabulate test metrics of folders written by `hf-plugins train informer-etth1`")
    parser.add_argument("--reference-log", nargs="+", default=[], metavar="LOG",
                        help="with --accuracy: add rows parsed from the stdout of the paper's own code "
                             "(zhouhaoyi/Informer2020 main_informer.py), the anchor for the accuracy figures")
    parser.add_argument("--reference-parity", default=None, metavar="CHECKOUT",
                        help="instead: load the same random weights into ours and into the paper's own code (a "
                             "checkout of zhouhaoyi/Informer2020, imported from there at run time) and compare outputs")
    args = parser.parse_args(argv)
    command = "python benchmarks/informer.py " + " ".join(argv if argv is not None else sys.argv[1:])

    if args.reference_parity:
        table = reference_parity_table(Path(args.reference_parity).expanduser())
        return _emit("Parity with the reference code: `python benchmarks/informer.py --reference-parity CHECKOUT`",
                     table, args.no_write)
    if args.accuracy:
        table = accuracy_table(args.accuracy, args.reference_log)
        return _emit(f"Accuracy: `{command.strip()}`", table, args.no_write, replaces="Accuracy:")

    torch.set_num_threads(args.threads)
    repeats = args.repeats or (2 if args.quick else 3)
    lengths = _ints(args.lengths) or ([96, 384, 1536] if args.quick else [96, 384, 1536, 3072])
    sizes = _pairs(args.model_sizes) or ([(96, 24)] if args.quick else [(96, 24), (336, 96), (720, 720)])
    blocks = [_machine_line(args.threads, repeats)]
    if args.part in ("attention", "all"):
        blocks.append(attention_table(lengths, repeats))
        print(blocks[-1], flush=True)
    if args.part in ("core", "all"):
        blocks.append(attention_table(lengths, repeats, core=True))
        print(blocks[-1], flush=True)
    if args.part in ("model", "all"):
        blocks.append(model_table(sizes, repeats))
        print(blocks[-1], flush=True)
    blocks.append(_machine_line(args.threads, repeats, end=True))
    return _emit(f"Speed and memory: `{command.strip()}`", "\n\n".join(blocks), args.no_write)


# -- attention alone ------------------------------------------------------------------------------------


def attention_table(lengths, repeats, batch=8, d_model=512, heads=8, factor=5, core=False) -> str:
    """One self-attention layer fwd+bwd; with ``core`` the four projections of both implementations are
    replaced by identities, leaving what differs: scoring, selection, attention, lazy-query filling."""
    from transformers.models.informer.modeling_informer import InformerProbSparseAttention

    from hf_plugins.configuration.informer_lstf import InformerLSTFConfig
    from hf_plugins.modeling.informer_lstf_attention import InformerLSTFAttention

    rows = []
    for length in lengths:
        torch.manual_seed(0)
        impls = {}
        for sampling in ("shared", "per_query"):
            config = InformerLSTFConfig(d_model=d_model, num_attention_heads=heads, sampling_factor=factor,
                                        probsparse_sampling=sampling, attention_dropout=0.0)
            impls[f"ours ({sampling})"] = InformerLSTFAttention(config, "encoder").train()
        hf = InformerProbSparseAttention(d_model, heads, dropout=0.0, sampling_factor=factor).train()
        impls["transformers prob"] = hf
        if core:
            for module in impls.values():
                for name in ("q_proj", "k_proj", "v_proj", "out_proj"):
                    setattr(module, name, torch.nn.Identity())
        x = torch.randn(batch, length, d_model)

        def step(module, x=x):
            h = x.clone().requires_grad_()
            out = module(h)
            out = out[0] if isinstance(out, tuple) else out
            out.float().pow(2).mean().backward()

        results = _measure({name: (lambda m=m: step(m)) for name, m in impls.items()}, repeats)
        rows.append((length, results))
        print(f"  attention{' core' if core else ''} L={length}: " + ", ".join(f"{k} {v['wall']:.3f}s" for k, v in results.items()), flush=True)
    what = ("Attention core (q/k/v/out projections replaced by identities in both" if core
            else "Attention alone (one self-attention layer with its projections")
    header = (f"{what}; fwd+bwd, batch {batch}, d_model {d_model}, {heads} heads, "
              f"factor {factor}; median of {repeats}):\n\n")
    return header + _table(rows, "L", anchor="transformers prob", ours="ours (shared)")


# -- whole model ----------------------------------------------------------------------------------------


def model_table(sizes, repeats, batch=32, channels=7, time_features=4, label_length=48) -> str:
    from transformers import InformerConfig, InformerForPrediction

    from hf_plugins.configuration.informer_lstf import InformerLSTFConfig
    from hf_plugins.modeling.informer_lstf import InformerLSTFForPrediction

    paper = dict(d_model=512, encoder_layers=2, decoder_layers=1)
    rows = []
    for context, horizon in sizes:
        torch.manual_seed(0)
        ours = InformerLSTFForPrediction(InformerLSTFConfig(
            input_size=channels, context_length=context, label_length=min(label_length, context),
            prediction_length=horizon, num_attention_heads=8, ffn_dim=2048, sampling_factor=5, **paper)).train()
        hf = InformerForPrediction(InformerConfig(
            input_size=channels, context_length=context, prediction_length=horizon, lags_sequence=[1],
            num_time_features=time_features, encoder_attention_heads=8, decoder_attention_heads=8,
            encoder_ffn_dim=2048, decoder_ffn_dim=2048, attention_type="prob", sampling_factor=5, distil=True,
            dropout=0.05, encoder_layerdrop=0.0, decoder_layerdrop=0.0, activation_function="gelu", **paper)).train()
        g = torch.Generator().manual_seed(0)
        past = torch.randn(batch, context + 1, channels, generator=g)
        past_tf = torch.rand(batch, context + 1, time_features, generator=g) - 0.5
        future = torch.randn(batch, horizon, channels, generator=g)
        future_tf = torch.rand(batch, horizon, time_features, generator=g) - 0.5

        def step_ours():
            ours(past_values=past[:, 1:], past_time_features=past_tf[:, 1:], future_values=future,
                 future_time_features=future_tf).loss.backward()
            ours.zero_grad(set_to_none=True)

        def step_hf():
            hf(past_values=past, past_time_features=past_tf, past_observed_mask=torch.ones_like(past),
               future_values=future, future_time_features=future_tf).loss.backward()
            hf.zero_grad(set_to_none=True)

        results = _measure({"ours": step_ours, "transformers": step_hf}, repeats)
        params = {"ours": sum(p.numel() for p in ours.parameters()), "transformers": sum(p.numel() for p in hf.parameters())}
        for name in results:
            results[name]["params"] = params[name]
        rows.append((f"{context} -> {horizon}", results))
        print(f"  model {context}->{horizon}: " + ", ".join(f"{k} {v['wall']:.2f}s" for k, v in results.items()), flush=True)
        del ours, hf
    header = (f"Whole model (training loss fwd+bwd, batch {batch}, {channels} channels, d_model 512, 8 heads, "
              f"2+1 layers, d_ff 2048, factor 5; ours label_length {label_length}; median of {repeats}):\n\n")
    return header + _table(rows, "context -> horizon", anchor="transformers", ours="ours")


# -- measurement ----------------------------------------------------------------------------------------


def _measure(steps: dict, repeats: int) -> dict:
    """Warm up each step, then time them interleaved; then one memory-tracked run of each."""
    for fn in steps.values():
        fn()
    wall = {name: [] for name in steps}
    cpu = {name: [] for name in steps}
    for _ in range(repeats):
        for name, fn in steps.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    results = {}
    for name, fn in steps.items():
        with _PeakTensorMemory() as tracker:
            fn()
        with FlopCounterMode(display=False) as flops:  # matmul/conv work: what no kernel tuning can remove
            fn()
        results[name] = {"wall": statistics.median(wall[name]), "cpu": statistics.median(cpu[name]),
                         "peak_mb": tracker.peak / 2**20, "gflop": flops.get_total_flops() / 1e9}
    return results


class _PeakTensorMemory(TorchDispatchMode):
    """High-water mark of the bytes held by tensor storages created inside the block.

    Every aten op's outputs are recorded with a weak reference to their storage; a storage counts until
    it is freed. Parameters and inputs made before the block are not counted: the figure is what one
    training step adds (activations kept for backward, temporaries, gradients).
    """

    def __enter__(self):
        self.live = {}
        self.current = self.peak = 0
        return super().__enter__()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for key in [k for k, (ref, _) in self.live.items() if ref.expired()]:
            self.current -= self.live.pop(key)[1]
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor) and t.device.type != "meta":
                storage = t.untyped_storage()
                key = storage.data_ptr()
                if key and key not in self.live:
                    self.live[key] = (StorageWeakRef(storage), storage.nbytes())
                    self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        return out


def _table(rows, key_name, anchor, ours) -> str:
    names = list(rows[0][1])
    lines = [f"| {key_name} | implementation | wall s | CPU s | peak MB | GFLOP | anchor/ours wall | anchor/ours CPU | "
             "ours/anchor peak | anchor/ours GFLOP |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for key, results in rows:
        a = results[anchor]
        for name in names:
            r = results[name]
            if name == anchor:
                ratio = "", "", "", ""
            else:
                ratio = (f"{a['wall'] / r['wall']:.2f}x", f"{a['cpu'] / r['cpu']:.2f}x", f"{r['peak_mb'] / a['peak_mb']:.2f}",
                         f"{a['gflop'] / r['gflop']:.2f}x")
            bold = "**" if name == ours else ""
            lines.append(f"| {key} | {bold}{name}{bold} | {r['wall']:.3f} | {r['cpu']:.3f} | {r['peak_mb']:.0f} | "
                         f"{r['gflop']:.1f} | {ratio[0]} | {ratio[1]} | {ratio[2]} | {ratio[3]} |")
    return "\n".join(lines)


def _machine_line(threads, repeats, end=False) -> str:
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if end:
        return f"Load average at the end: {load}."
    import transformers

    return (f"{when}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
            f"transformers {transformers.__version__}, {threads} thread(s), {repeats} repeats; load average at the "
            f"start: {load} (a shared machine: wall times are noisy, CPU times less so).")


# -- accuracy runs --------------------------------------------------------------------------------------

PAPER_ETTH1_M = {24: (0.577, 0.549), 48: (0.685, 0.625), 168: (0.931, 0.752), 336: (1.128, 0.873), 720: (1.215, 0.896)}


def accuracy_table(folders, reference_logs=()) -> str:
    lines = ["| horizon | features | attention | context/label | epochs trained | validation MSE by epoch (best is tested) "
             "| test MSE | test MAE | paper MSE / MAE | command |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    budget_limited = any_bias_free = False
    by_horizon = {}
    for folder in folders:
        metrics = json.loads((Path(folder) / "metrics.json").read_text())
        config = json.loads((Path(folder) / "config.json").read_text())
        a, test = metrics["args"], metrics.get("test", {})
        paper = PAPER_ETTH1_M.get(config["prediction_length"]) if a.get("features") == "M" else None
        keys = ("horizon", "features", "attention") + (() if a.get("max_steps") else ("epochs",))
        options = " ".join(f"--{k.replace('_', '-')} {a[k]}" for k in keys if a.get(k) is not None)
        if a.get("max_steps"):
            options += f" --max-steps {a['max_steps']}"
        stack = ",".join(map(str, config.get("encoder_stack") or []))
        if stack:
            options += f" --encoder-stack {stack}"
        model = f"InformerStack {stack}" if stack else "Informer"
        if _lr_schedule(metrics) == "reference":
            options += " --lr-schedule reference"
            model += ", reference lr schedule"
        bias_free = not config.get("embedding_bias", False)  # trained before the option existed
        if bias_free:
            model += ", bias-free embeddings"
            any_bias_free = True
        if config.get("probsparse_sampling", "shared") != "shared":
            options += f" --probsparse-sampling {config['probsparse_sampling']}"
            model += ", per-query key samples"
        options += f" --seed {metrics.get('seed', a.get('seed'))}"
        by_horizon.setdefault((config["prediction_length"], model), []).append(test.get("test_mse", float("nan")))
        per_step = {}  # one validation per epoch; the extra one after training (best weights restored) is skipped
        for entry in metrics.get("log_history", []):
            if "eval_loss" in entry:
                per_step.setdefault(entry.get("step"), entry["eval_loss"])
        by_epoch = ", ".join(f"{value:.3f}" for value in per_step.values())
        lines.append(
            f"| {config['prediction_length']} | {a.get('features')} | {config['attention_type']} | "
            f"{config['context_length']}/{config['label_length']} | {metrics['train'].get('epoch', float('nan')):.2f} | "
            f"{by_epoch or '-'} | "
            f"{test.get('test_mse', float('nan')):.3f} | {test.get('test_mae', float('nan')):.3f} | "
            f"{'%.3f / %.3f' % paper if paper else 'n/a'} | `hf-plugins train informer-etth1 {options}`"
            f"{' (bias-free embeddings)' if bias_free else ''} |")
        budget_limited = budget_limited or bool(a.get("max_steps"))
    for log in reference_logs:
        run = parse_reference_log(Path(log).read_text())
        paper = PAPER_ETTH1_M.get(run["pred_len"]) if run["features"] == "M" else None
        model = "Informer2020 reference code" + (f" ({run['model']})" if run["model"] != "informer" else "")
        by_horizon.setdefault((run["pred_len"], model), []).append(run["test_mse"])
        by_epoch = ", ".join(f"{v:.3f}" for v in run["validation"])
        lines.append(
            f"| {run['pred_len']} | {run['features']} | {run['attn']} | {run['seq_len']}/{run['label_len']} | "
            f"{len(run['validation']):.2f} | {by_epoch} | {run['test_mse']:.3f} | {run['test_mae']:.3f} | "
            f"{'%.3f / %.3f' % paper if paper else 'n/a'} | reference code: `{run['command']}` (log {Path(log).name}) |")
    if any_bias_free:
        lines.append("\nRows marked bias-free embeddings were trained before the value and time-feature embeddings got "
                     "the reference code's bias terms (`embedding_bias`, now on by default); their command gives "
                     "today's model.")
    if reference_logs:
        lines.append("\nReference-code rows: the paper's own code, zhouhaoyi/Informer2020 at 29f2a73, run on this machine "
                     "(CPU, 1 thread, not seeded: it sets no seed) with numpy 2's `np.inf` in place of the removed "
                     "`np.Inf` in utils/tools.py, its only change. Its validation figure is the mean of per-batch MSE "
                     "and its test loader drops the last partial batch (`drop_last=True`); ours score every window.")
    for (horizon, model), values in by_horizon.items():
        if len(values) > 1:
            paper = PAPER_ETTH1_M.get(horizon)
            lines.append(f"\nH={horizon}, {model}: {len(values)} runs, mean test MSE {statistics.mean(values):.3f}, "
                         f"range {min(values):.3f}-{max(values):.3f}" + (f" (paper {paper[0]:.3f})" if paper else ""))
    if budget_limited:
        lines.append("\nRuns with `--max-steps` stop before the paper's protocol (up to 6 epochs, early stopping, "
                     "learning rate halved per epoch): their figures are budget-limited, not a reproduction.")
    return "\n".join(lines)


def parse_reference_log(text: str) -> dict:
    """Settings, validation loss per epoch and test MSE/MAE from the stdout of Informer2020's main_informer.py.

    The run's arguments come from its ``Args in experiment: Namespace(...)`` line, the per-epoch
    ``Vali Loss`` from its ``Epoch: N, Steps: ...`` lines and the tested (best-validation) model's figures
    from the final ``mse:..., mae:...`` line. A log without them (a run still going, another program) is
    an error that says what is missing.
    """
    namespace = re.search(r"Namespace\((.*)\)", text)
    result = re.findall(r"^mse:([0-9.eE+-]+), mae:([0-9.eE+-]+)", text, flags=re.M)
    if not namespace or not result:
        raise ValueError("not a finished Informer2020 main_informer.py log: expected its 'Args in experiment: "
                         "Namespace(...)' line and a final 'mse:..., mae:...' line")
    fields = dict(re.findall(r"(\w+)=('[^']*'|[^,]+)", namespace.group(1)))
    arg = {k: v.strip("'") for k, v in fields.items()}
    validation = [float(v) for v in re.findall(r"Vali Loss: ([0-9.eE+-]+)", text)]
    flags = ("model", "data", "features", "seq_len", "label_len", "pred_len", "e_layers", "d_layers", "attn", "factor",
             "train_epochs")
    command = "python -u main_informer.py " + " ".join(f"--{k} {arg[k]}" for k in flags if k in arg)
    mse, mae = (float(v) for v in result[-1])
    return {"model": arg.get("model", "informer"), "features": arg.get("features", "M"),
            "attn": arg.get("attn", "prob"), "seq_len": int(arg["seq_len"]), "label_len": int(arg["label_len"]),
            "pred_len": int(arg["pred_len"]), "validation": validation, "test_mse": mse, "test_mae": mae,
            "command": command}


def _lr_schedule(metrics) -> str:
    """The run's ``--lr-schedule``; runs made before the flag existed are told apart by the rate logged in
    epoch 2 (halved: paper; still the base rate: reference)."""
    if metrics["args"].get("lr_schedule"):
        return metrics["args"]["lr_schedule"]
    base = metrics["args"].get("learning_rate") or 1e-4
    epoch_two = [entry["learning_rate"] for entry in metrics.get("log_history", [])
                 if "learning_rate" in entry and 1.0 < entry.get("epoch", 0) < 2.0]
    return "reference" if epoch_two and min(epoch_two) > 0.75 * base else "paper"


# -- parity with the reference code --------------------------------------------------------------------

# our parameter names -> Informer2020's (models/model.py), applied in order
_REFERENCE_NAMES = [
    (r"^model\.encoder_embedding\.value_embedding\.", "enc_embedding.value_embedding.tokenConv."),
    (r"^model\.decoder_embedding\.value_embedding\.", "dec_embedding.value_embedding.tokenConv."),
    (r"^model\.encoder_embedding\.time_embedding\.", "enc_embedding.temporal_embedding.embed."),
    (r"^model\.decoder_embedding\.time_embedding\.", "dec_embedding.temporal_embedding.embed."),
    (r"^model\.decoder_layer_norm\.", "decoder.norm."),
    (r"^model\.decoder_layers\.", "decoder.layers."),
    (r"^model\.encoder\.", "encoder."),
    (r"(encoder\.(?:encoders\.\d+\.)?)layers\.", r"\1attn_layers."),
    (r"distil_layers\.(\d+)\.conv\.", r"conv_layers.\1.downConv."),
    (r"distil_layers\.", "conv_layers."),
    (r"(attn_layers\.\d+\.)self_attn\.", r"\1attention."),
    (r"self_attn\.", "self_attention."),
    (r"cross_attn\.", "cross_attention."),
    (r"self_attn_layer_norm", "norm1"),
    (r"cross_attn_layer_norm", "norm2"),
    (r"(attn_layers\.\d+\.)final_layer_norm", r"\1norm2"),
    (r"final_layer_norm", "norm3"),
    (r"feed_forward\.fc", "conv"),
    (r"(encoder\.(?:encoders\.\d+\.)?)layer_norm\.", r"\1norm."),
    (r"q_proj", "query_projection"), (r"k_proj", "key_projection"), (r"v_proj", "value_projection"),
    (r"out_proj", "out_projection"),
]


def _reference_name(name: str) -> str:
    for pattern, replacement in _REFERENCE_NAMES:
        name = re.sub(pattern, replacement, name)
    return name


def reference_parity_table(checkout: Path) -> str:
    """Our InformerLSTF and Informer2020's Informer / InformerStack with the same random weights: largest output
    difference in eval and train mode (dropout 0; train mode exercises BatchNorm's batch statistics) and of
    the input gradient of the MSE loss. ProbSparse draws random keys, so it is compared where every query is
    active (factor large enough that u = L), the case in which the paper's attention must equal full attention."""
    if not (checkout / "models" / "model.py").is_file():
        raise SystemExit(f"--reference-parity {checkout}: expected a checkout of zhouhaoyi/Informer2020 "
                         "(models/model.py not found)")
    sys.path.insert(0, str(checkout))
    from models.model import Informer, InformerStack  # the reference code, imported from the user's checkout

    from hf_plugins.configuration.informer_lstf import InformerLSTFConfig
    from hf_plugins.modeling.informer_lstf import InformerLSTFForPrediction

    cases = [  # (name, attention, factor, features, encoder stack)
        ("Informer, full attention, M", "full", 5, "M", None),
        ("Informer, ProbSparse with every query active, M", "prob", 10, "M", None),
        ("Informer, full attention, MS (7 in, 1 out)", "full", 5, "MS", None),
        ("InformerStack 3,2,1, full attention, M", "full", 5, "M", [3, 2, 1]),
    ]
    seq, label, horizon, d_model, batch = 24, 12, 12, 32, 4
    lines = ["| model | parameters | max abs diff, eval | max abs diff, train | max abs diff, input gradient | "
             "output scale |", "| --- | ---: | ---: | ---: | ---: | ---: |"]
    for name, attention, factor, features, stack in cases:
        torch.manual_seed(0)
        c_out = 1 if features == "MS" else 7
        common = dict(enc_in=7, dec_in=7, c_out=c_out, seq_len=seq, label_len=label, out_len=horizon, factor=factor,
                      d_model=d_model, n_heads=4, d_layers=1, d_ff=64, dropout=0.0, attn=attention, embed="timeF",
                      freq="h", activation="gelu", output_attention=False, distil=True, mix=True,
                      device=torch.device("cpu"))
        ref = InformerStack(e_layers=stack, **common) if stack else Informer(e_layers=2, **common)
        config = InformerLSTFConfig(input_size=7, output_size=c_out, context_length=seq, label_length=label,
                                    prediction_length=horizon, d_model=d_model, num_attention_heads=4, ffn_dim=64,
                                    attention_type=attention, sampling_factor=factor, dropout=0.0,
                                    attention_dropout=0.0, encoder_stack=stack)
        ours = InformerLSTFForPrediction(config)
        reference_state = ref.state_dict()
        mapped, used = {}, set()
        for key, value in ours.state_dict().items():
            source = _reference_name(key)
            if source not in reference_state:
                raise SystemExit(f"no reference parameter for {key} (looked for {source})")
            mapped[key] = reference_state[source].reshape(value.shape)
            used.add(source)
        unused = {k for k in reference_state if k not in used and not k.endswith("position_embedding.pe")}
        if unused:
            raise SystemExit(f"reference parameters with no counterpart in ours: {sorted(unused)}")
        ours.load_state_dict(mapped)
        x, x_mark = torch.randn(batch, seq, 7), torch.rand(batch, seq, 4) - 0.5
        y_mark = torch.rand(batch, horizon, 4) - 0.5
        target = torch.randn(batch, horizon, c_out)
        dec_mark = torch.cat([x_mark[:, -label:], y_mark], 1)

        def run_ours(values, ours=ours):
            return ours(past_values=values, past_time_features=x_mark, future_time_features=y_mark).prediction_outputs

        def run_reference(values, ref=ref):  # the reference's generative decoder input, built as exp_informer does
            return ref(values, x_mark, torch.cat([values[:, -label:], torch.zeros(batch, horizon, 7)], 1), dec_mark)

        outputs = []  # (ours, reference) in eval mode, then in train mode
        for train in (False, True):
            ref.train(train), ours.train(train)
            with torch.no_grad():
                outputs.append((run_ours(x), run_reference(x)))
        grads = []  # input gradients of the MSE loss, train mode
        for run in (run_ours, run_reference):
            values = x.clone().requires_grad_(True)
            torch.nn.functional.mse_loss(run(values), target).backward()
            grads.append(values.grad)
        (eval_ours, eval_ref), (train_ours, train_ref) = outputs
        lines.append(f"| {name} | {sum(p.numel() for p in ours.parameters()):,} | "
                     f"{(eval_ours - eval_ref).abs().max().item():.1e} | "
                     f"{(train_ours - train_ref).abs().max().item():.1e} | "
                     f"{(grads[0] - grads[1]).abs().max().item():.1e} | {eval_ours.abs().max().item():.2f} |")
    sys.path.remove(str(checkout))
    return (f"Reference: zhouhaoyi/Informer2020 {_commit_of(checkout)}, imported from a local checkout; tiny size (d_model "
            f"{d_model}, 4 heads, d_ff 64, context {seq}, label {label}, horizon {horizon}, batch {batch}), "
            "random weights copied from the reference model into ours by name.\n\n" + "\n".join(lines))


def _commit_of(checkout: Path) -> str:
    """The checkout's commit, or 'at an unknown commit' when it is not a git work tree."""
    import subprocess

    try:
        return "at " + subprocess.run(["git", "-C", str(checkout), "rev-parse", "--short", "HEAD"], check=True,
                                      capture_output=True, text=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "at an unknown commit"


# -- output ---------------------------------------------------------------------------------------------


def _emit(title: str, body: str, no_write: bool, replaces: str | None = None) -> int:
    """Print a section and put it in RESULTS in place of the sections whose title starts with `replaces`
    (default: the same title)."""
    print(f"\n## {title}\n\n{body}\n")
    if no_write:
        return 0
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    text = RESULTS.read_text() if RESULTS.exists() else "# InformerLSTF benchmarks\n"
    sections = text.split("\n## ")
    head, rest = sections[0], [s for s in sections[1:] if not s.startswith(replaces or title)]
    new = "\n## ".join([head.rstrip("\n") + "\n", *[s.rstrip("\n") + "\n" for s in rest], f"{title}\n\n{body}\n"])
    tmp = RESULTS.with_suffix(".md.tmp")
    tmp.write_text(new)
    os.replace(tmp, RESULTS)
    print(f"wrote {RESULTS}")
    return 0


def _ints(text):
    return [int(x) for x in text.split(",")] if text else None


def _pairs(text):
    return [tuple(int(v) for v in x.split(":")) for x in text.split(",")] if text else None


if __name__ == "__main__":
    sys.exit(main())
