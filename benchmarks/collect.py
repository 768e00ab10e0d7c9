"""Gather every benchmark's section (benchmarks/results/*.md, written by the scripts) into RESULTS.md.

    python benchmarks/collect.py

Each section carries the command that produced it; nothing here is typed by hand.
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parent
ORDER = ["informer", "patchtsmixer", "matformer", "idt5", "s2ft", "ast_adapters", "longformer_rtd", "bistil"]

HEADER = """# Benchmark results

Every figure below was printed by the script named in its section, on the machine named there (CPU, no GPU:
2 cores shared with other work, so absolute times are noisy; ours and the anchor always run interleaved in
one process, and the ratios are what to read). Regenerate a section by running its command, then
`python benchmarks/collect.py`.
"""


def main() -> None:
    parts = [HEADER]
    files = sorted((ROOT / "results").glob("*.md"), key=lambda p: (ORDER.index(p.stem) if p.stem in ORDER else 99, p.stem))
    for path in files:
        parts.append(path.read_text().strip() + "\n")
    out = ROOT / "RESULTS.md"
    tmp = out.with_suffix(".tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(out)
    print(f"wrote {out} from {len(files)} sections")


if __name__ == "__main__":
    main()
