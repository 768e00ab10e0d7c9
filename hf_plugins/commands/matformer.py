"""``hf-plugins extract MODEL_DIR --widths s|m|l|xl|w1,w2,... --output-dir OUT``: cut a standalone
submodel (one granularity, or Mix'n'Match with one name/width per layer) out of a MatFormer checkpoint."""

from __future__ import annotations


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "extract",
        help="extract a smaller standalone model from a MatFormer checkpoint (S/M/L/XL or Mix'n'Match)",
        description=(
            "Extract a MatFormer submodel (paper §3.3/§4.1). --widths takes a granularity name (s, m, l, xl), "
            "one FFN width, or a comma-separated list with one name or width per layer (Mix'n'Match)."
        ),
    )
    p.add_argument("model_dir", help="a folder (or Hub id) holding a MatFormer checkpoint")
    p.add_argument("--widths", required=True, help="s|m|l|xl|WIDTH or NAME_OR_WIDTH,... one per layer")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--list", action="store_true", help="also print the recommended Mix'n'Match sizes")
    p.set_defaults(func=cmd_extract)


def parse_widths(text: str):
    """``"s"`` -> ``"s"``; ``"512"`` -> 512; ``"s,m,1024"`` -> ``["s", "m", 1024]``."""
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise ValueError(f"--widths {text!r}: expected a granularity name, a width, or one per layer")
    values = [int(t) if t.isdigit() else t for t in items]
    return values if "," in text else values[0]


def cmd_extract(args, rest) -> int:
    from pathlib import Path

    import hf_plugins  # noqa: F401  (registers MatFormer with the Auto classes)
    from transformers import AutoModelForCausalLM

    from .._io import atomic_directory
    from ..matformer_utils import mix_n_match_configurations

    model = AutoModelForCausalLM.from_pretrained(args.model_dir)
    if not hasattr(model, "extract_submodel"):
        raise ValueError(f"{args.model_dir!r} holds a {type(model).__name__}, not a MatFormer model")
    widths = parse_widths(args.widths)
    sub = model.extract_submodel(widths)
    out = Path(args.output_dir).resolve()
    with atomic_directory(out) as tmp:
        sub.save_pretrained(tmp, safe_serialization=True)
        _copy_tokenizer(args.model_dir, tmp)
    full, small = model.num_parameters(), sub.num_parameters()
    print(f"extracted {args.widths} -> FFN widths {sub.config.layer_intermediate_sizes}")
    print(f"parameters: {small:,} of {full:,} ({100.0 * small / full:.1f}%); wrote {out}")
    if args.list:
        for cand in mix_n_match_configurations(model):
            print(f"  {cand.label:<30} {cand.num_parameters:>12,}")
    return 0


def _copy_tokenizer(source: str, target) -> None:
    """Save the checkpoint's tokenizer next to the submodel, when it has one."""
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(source)
    except Exception:  # a checkpoint without tokenizer files is fine
        return
    tokenizer.save_pretrained(target)
