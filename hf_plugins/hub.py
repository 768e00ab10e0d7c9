"""Model cards and Hub publishing for the folders that ``hf-plugins train`` writes.

* :func:`render_card` / :func:`write_card` fill the paper's template ``hub_cards/<paper>.md`` (or
  ``hub_cards/default.md``) from the folder's ``metrics.json`` and ``config.json`` with
  ``huggingface_hub.ModelCard.from_template``.
* :func:`publish` uploads a folder (or a model) with ``HfApi.create_repo`` + ``HfApi.upload_folder``,
  retrying connection errors and server errors with exponential backoff, then raising
  :class:`PublishError`, which names the repo and the cause.

Templates are Jinja. They start with ``---\\n{{ card_data }}\\n---`` and may use:

========================  =====================================================================
``metrics``               the whole ``metrics.json`` dict (``{}`` when the folder has none)
``test_metrics``          test metrics without the ``test_`` prefix and without timing entries
``eval_metrics``          the same for the validation split
``metrics_table``         ``test_metrics`` as a markdown table (empty string when there are none)
``plots``                 PNG file names in the folder (those of ``metrics["plots"]`` first)
``card``                  ``RecipePlan.card`` (``pipeline_tag``, ``tags``, ``datasets``, ``license``,
                          ``dataset_description``, ``notes``, optionally ``citation``, ``base_model``,
                          ``intended_use``, ``limitations``, ``dataset_name``, and ``index_metrics``:
                          the test metrics to put in model-index, default all but naive/baseline ones)
``config``                ``config.json`` (or ``adapter_config.json`` for a peft adapter)
``repo_id``               the Hub repo id, or a ``<namespace>/<folder>`` placeholder before publishing
``published``             whether ``repo_id`` is a real repo id
``model_type``            ``config["model_type"]`` (the peft type for an adapter)
``auto_class``            the transformers Auto class that loads the model (``AutoModel`` by default)
``architecture``          ``config["architectures"][0]`` when known
``is_peft``               whether the folder holds a peft adapter
``base_model``            the adapter's base model (peft) or ``card["base_model"]``
``hyperparameters``       ``metrics["args"]`` (the recipe's options) less ``output_dir``/``data_dir``
``train_metrics``         ``metrics["train"]``
``versions``              ``metrics["versions"]``
========================  =====================================================================

A Hub token is never written to a log, a card, an uploaded file or an exception message: it is
redacted (``***``) wherever it could appear.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
import tempfile
import time
from importlib import resources
from pathlib import Path
from typing import Any

from ._io import atomic_path

logger = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "default"
# Exponential backoff between attempts of publish(): 1 s, 2 s, 4 s... capped.
RETRY_BASE_WAIT = 1.0
RETRY_MAX_WAIT = 16.0
# Trainer.evaluate adds these to every metrics dict; they describe the run, not the model.
_TIMING_KEYS = ("runtime", "samples_per_second", "steps_per_second", "epoch", "model_preparation_time")
# Text files of a folder that publish() scans (and redacts) for the token before uploading.
_TEXT_SUFFIXES = (".json", ".md", ".txt", ".yaml", ".yml", ".csv", ".cfg", ".ini", ".toml", ".py", ".log")
_TEXT_MAX_BYTES = 20 * 1024 * 1024
# Architecture suffix -> the Auto class that loads it (transformers' naming convention).
_AUTO_BY_SUFFIX = (
    ("ForCausalLM", "AutoModelForCausalLM"),
    ("ForMaskedLM", "AutoModelForMaskedLM"),
    ("ForSeq2SeqLM", "AutoModelForSeq2SeqLM"),
    ("ForConditionalGeneration", "AutoModelForSeq2SeqLM"),
    ("ForSequenceClassification", "AutoModelForSequenceClassification"),
    ("ForTokenClassification", "AutoModelForTokenClassification"),
    ("ForQuestionAnswering", "AutoModelForQuestionAnswering"),
    ("ForMultipleChoice", "AutoModelForMultipleChoice"),
    ("ForPreTraining", "AutoModelForPreTraining"),
    ("ForAudioClassification", "AutoModelForAudioClassification"),
    ("ForImageClassification", "AutoModelForImageClassification"),
    ("ForCTC", "AutoModelForCTC"),
    ("ForPrediction", "AutoModelForTimeSeriesPrediction"),
)


class PublishError(RuntimeError):
    """Publishing to the Hub failed; the message names the repo id and the cause (never the token).

    Attributes:
        repo_id: the repo that was being published.
        attempts: how many attempts were made.
        status_code: the HTTP status of the last failure, when there was one.
    """

    def __init__(self, message: str, repo_id: str, attempts: int, status_code: int | None = None):
        super().__init__(message)
        self.repo_id = repo_id
        self.attempts = attempts
        self.status_code = status_code


# ------------------------------------------------------------------------------------------------
# Model cards
# ------------------------------------------------------------------------------------------------
def render_card(folder: str | os.PathLike, repo_id: str | None = None):
    """Render the model card of ``folder`` (a folder written by ``hf-plugins train``).

    Reads ``metrics.json`` and ``config.json`` (or ``adapter_config.json``), picks
    ``hub_cards/<metrics["paper"]>.md`` if it exists and ``hub_cards/default.md`` otherwise, and fills it.

    Args:
        folder: the model folder.
        repo_id: the Hub repo the card is for (used in the usage code); a placeholder when ``None``.

    Returns:
        a ``huggingface_hub.ModelCard``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder {str(folder)!r} does not exist")
    return _render(folder, _read_json(folder / "metrics.json"), repo_id)


def _render(folder: Path, metrics: dict, repo_id: str | None):
    from huggingface_hub import ModelCard

    variables = _card_variables(folder, metrics, repo_id)
    template = template_path(metrics.get("paper"))
    card_data = _card_data(metrics, variables)
    card = ModelCard.from_template(card_data, template_path=str(template), **variables)
    # metrics.json records the command-line options; a token passed there must not reach the card.
    text = _redact(str(card), _known_tokens())
    return card if text == str(card) else ModelCard(text)


def write_card(folder: str | os.PathLike, repo_id: str | None = None) -> Path:
    """Render the card of ``folder`` (see :func:`render_card`) into ``folder/README.md``, atomically."""
    folder = Path(folder)
    card = render_card(folder, repo_id=repo_id)
    path = folder / "README.md"
    _atomic_write_text(path, str(card))
    return path


def template_path(paper: str | None = None) -> Path:
    """The card template of ``paper`` (``hub_cards/<paper>.md``), or the generic ``default.md``."""
    cards = resources.files("hf_plugins.hub_cards")
    if paper and re.fullmatch(r"[\w.-]+", paper):
        candidate = cards / f"{paper}.md"
        if candidate.is_file():
            return Path(str(candidate))
    return Path(str(cards / f"{DEFAULT_TEMPLATE}.md"))


def _card_variables(folder: Path, metrics: dict, repo_id: str | None) -> dict[str, Any]:
    config = _read_json(folder / "config.json")
    adapter = _read_json(folder / "adapter_config.json")
    is_peft = bool(adapter) and not config
    if is_peft:
        config = adapter
    card = dict(metrics.get("card") or {})
    plots = [p for p in metrics.get("plots") or [] if (folder / p).is_file()]
    plots += sorted(p.name for p in folder.glob("*.png") if p.name not in plots)
    test_metrics = _clean_metrics(metrics.get("test"), "test")
    architecture = (config.get("architectures") or [None])[0]
    return {
        "metrics": metrics,
        "test_metrics": test_metrics,
        "eval_metrics": _clean_metrics(metrics.get("eval"), "eval"),
        "metrics_table": _metrics_table(test_metrics),
        "plots": plots,
        "card": card,
        "config": config,
        "repo_id": repo_id or f"<your-namespace>/{_folder_name(folder, metrics)}",
        "published": repo_id is not None,
        "model_type": config.get("peft_type") if is_peft else config.get("model_type"),
        "auto_class": None if is_peft else _auto_class(config),
        "architecture": architecture,
        "is_peft": is_peft,
        "base_model": (config.get("base_model_name_or_path") if is_peft else None) or card.get("base_model"),
        # local paths say nothing about the model
        "hyperparameters": {k: v for k, v in (metrics.get("args") or {}).items() if k not in ("output_dir", "data_dir")},
        "train_metrics": metrics.get("train") or {},
        "versions": metrics.get("versions") or {},
    }


def _folder_name(folder: Path, metrics: dict) -> str:
    """The name the folder will have: the runner renders the card in a temporary sibling first."""
    output_dir = (metrics.get("args") or {}).get("output_dir")
    if output_dir:
        return Path(str(output_dir)).name
    return metrics.get("recipe") or folder.resolve().name


def _card_data(metrics: dict, variables: dict):
    from huggingface_hub import EvalResult, ModelCardData

    card = variables["card"]
    paper = metrics.get("paper")
    tags = ["hf-plugins", *([paper] if paper else []), *(card.get("tags") or [])]
    if variables["is_peft"]:
        tags += ["peft", *([str(variables["model_type"]).lower()] if variables["model_type"] else [])]
    elif variables["model_type"]:
        tags.append(str(variables["model_type"]))
    datasets = card.get("datasets")
    if isinstance(datasets, str):
        datasets = [datasets]
    base_model = variables["base_model"]
    eval_results = None
    pipeline_tag = card.get("pipeline_tag")
    # model-index states what the model scores: baselines reported next to it stay in the table only.
    chosen = card.get("index_metrics")
    numeric = {
        k: v for k, v in variables["test_metrics"].items()
        if _is_number(v) and (k in chosen if chosen else not re.search(r"naive|baseline", k))
    }
    # model-index needs a task and a dataset to say what the numbers mean; without them it is left out.
    if numeric and pipeline_tag and datasets:
        eval_results = [
            EvalResult(
                task_type=pipeline_tag,
                dataset_type=datasets[0],
                dataset_name=card.get("dataset_name") or datasets[0],
                dataset_split="test",
                metric_type=name,
                metric_name=name,
                metric_value=float(value),
            )
            for name, value in numeric.items()
        ]
    model_name = variables["repo_id"].split("/")[-1] if variables["published"] else metrics.get("recipe") or variables["repo_id"].split("/")[-1]
    return ModelCardData(
        library_name="peft" if variables["is_peft"] else "transformers",
        tags=tags,
        pipeline_tag=pipeline_tag,
        license=card.get("license", "apache-2.0"),
        datasets=datasets,
        base_model=base_model if isinstance(base_model, (str, list)) and base_model else None,
        model_name=model_name if eval_results else None,
        eval_results=eval_results,
    )


def _clean_metrics(values: dict | None, prefix: str) -> dict:
    out = {}
    for key, value in (values or {}).items():
        name = key[len(prefix) + 1:] if key.startswith(prefix + "_") else key
        if name in _TIMING_KEYS or isinstance(value, (dict, list)):
            continue
        out[name] = value
    return out


def _metrics_table(values: dict) -> str:
    if not values:
        return ""
    rows = ["| metric | value |", "| --- | --- |"]
    for name, value in values.items():
        shown = f"{value:.6g}" if _is_number(value) and isinstance(value, float) else str(value)
        rows.append(f"| {name} | {shown} |")
    return "\n".join(rows)


def _auto_class(config: dict) -> str:
    """The Auto class that loads ``config``'s architecture: the plugin's own mapping, else the name."""
    architecture = (config.get("architectures") or [None])[0]
    if not architecture:
        return "AutoModel"
    try:
        from .registry import registered_plugins

        spec = registered_plugins().get(config.get("model_type"))
        for auto, target in (spec.auto if spec is not None else {}).items():
            if str(target).rsplit(":", 1)[-1].rsplit(".", 1)[-1] == architecture:
                return auto
    except Exception as exc:  # the card must render even if a plugin fails to register
        logger.debug("could not look up the Auto class of %s: %s", architecture, exc)
    for suffix, auto in _AUTO_BY_SUFFIX:
        if architecture.endswith(suffix):
            return auto
    return "AutoModel"


# ------------------------------------------------------------------------------------------------
# Publishing
# ------------------------------------------------------------------------------------------------
def publish(
    folder_or_model,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    commit_message: str | None = None,
    max_retries: int = 3,
    endpoint: str | None = None,
) -> str:
    """Upload a trained folder or a model to the Hub, with its model card; return the repo URL.

    Args:
        folder_or_model: a folder written by ``hf-plugins train`` (its card is re-rendered with
            ``repo_id``; the folder itself is left as it is), any ``save_pretrained`` folder, or a
            ``PreTrainedModel`` / ``PeftModel`` (saved with safetensors to a temporary folder, with a card
            from ``hub_cards/default.md``).
        repo_id: ``namespace/name`` (or ``name``, in the token owner's namespace).
        token: the Hub token (default: ``HF_TOKEN`` or the stored login).
        private: create the repo as private (an existing repo keeps its visibility).
        commit_message: defaults to ``"Upload <recipe or model type> with hf-plugins"``.
        max_retries: how many times a failure that may be transient (no connection, timeout, HTTP 429
            or 5xx) is retried, with exponential backoff; other failures are not retried.
        endpoint: the Hub URL (default: ``HF_ENDPOINT`` / huggingface.co, as ``huggingface_hub`` has it).

    Raises:
        PublishError: naming ``repo_id`` and the cause, once the retries are spent.
        FileNotFoundError: ``folder_or_model`` is a path that does not exist.
    """
    from huggingface_hub import HfApi, constants

    if not isinstance(repo_id, str) or not re.fullmatch(r"[\w.-]+(/[\w.-]+)?", repo_id):
        raise ValueError(f"repo_id must be 'namespace/name' or 'name' (letters, digits, '-', '_', '.'), got {repo_id!r}")
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, got {max_retries}")
    endpoint = (endpoint or constants.ENDPOINT).rstrip("/")
    secrets = _known_tokens(token)
    api = HfApi(endpoint=endpoint, token=token)
    attempts = max_retries + 1
    with tempfile.TemporaryDirectory(prefix="hf-plugins-publish-") as staging:
        stage = Path(staging)
        default_message = _stage(folder_or_model, stage, repo_id, secrets)
        message = commit_message or default_message
        for attempt in range(1, attempts + 1):
            logger.info("publishing to %s at %s (attempt %d of %d)", repo_id, endpoint, attempt, attempts)
            try:
                url = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
                target = getattr(url, "repo_id", None) or repo_id
                api.upload_folder(folder_path=str(stage), repo_id=target, repo_type="model", commit_message=message)
            except Exception as exc:  # classified below; KeyboardInterrupt etc. pass through
                transient, status = _classify(exc)
                cause = _redact(_describe(exc), secrets)
                if "xet-write-token" in cause:  # hf_xet reports a server without Xet as a connection error
                    transient = False
                    cause += (" (this Hub server does not accept Xet uploads: set HF_HUB_DISABLE_XET=1 before"
                              " huggingface_hub is imported to upload with plain git-LFS)")
                if transient and attempt < attempts:
                    wait = min(RETRY_MAX_WAIT, RETRY_BASE_WAIT * 2 ** (attempt - 1))
                    logger.warning(
                        "publishing to %s failed (attempt %d of %d): %s; retrying in %.1f s",
                        repo_id, attempt, attempts, cause, wait,
                    )
                    time.sleep(wait)
                    continue
                tried = f"after {attempt} attempt{'s' if attempt > 1 else ''}" if transient else "(not retried: not transient)"
                # `from None`: the original exception and its traceback stay out of the message and logs.
                raise PublishError(
                    f"could not publish to the Hub repo {repo_id!r} at {endpoint} {tried}: {cause}",
                    repo_id=repo_id, attempts=attempt, status_code=status,
                ) from None
            logger.info("published %s", url)
            return str(url)
    raise AssertionError("unreachable")


def _stage(folder_or_model, stage: Path, repo_id: str, secrets: list[str]) -> str:
    """Fill ``stage`` with what to upload (links to the files, a fresh card); return a commit message."""
    if isinstance(folder_or_model, (str, os.PathLike)):
        folder = Path(folder_or_model)
        if not folder.is_dir():
            raise FileNotFoundError(f"model folder {str(folder)!r} does not exist")
        if not (folder / "config.json").is_file() and not (folder / "adapter_config.json").is_file():
            raise FileNotFoundError(f"{str(folder)!r} has neither config.json nor adapter_config.json: not a model folder")
        _link_tree(folder, stage, secrets)
        metrics = _read_json(folder / "metrics.json")
        if metrics or not (folder / "README.md").is_file():
            card = str(render_card(stage, repo_id=repo_id))
        else:  # a plain save_pretrained folder with its own card: keep that card
            card = (folder / "README.md").read_text(encoding="utf-8")
        what = metrics.get("recipe") or _read_json(folder / "config.json").get("model_type") or "adapter"
    elif hasattr(folder_or_model, "save_pretrained"):
        model = folder_or_model
        model.save_pretrained(str(stage))
        pickles = [p.name for p in stage.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl")]
        if pickles:
            raise ValueError(f"{type(model).__name__}.save_pretrained wrote pickle files {pickles}; only safetensors are published")
        card = str(_render(stage, {"description": f"A `{type(model).__name__}` published with hf-plugins."}, repo_id))
        what = getattr(getattr(model, "config", None), "model_type", None) or type(model).__name__
    else:
        raise TypeError(
            f"publish() takes a model folder or a model with save_pretrained(), got {type(folder_or_model).__name__}"
        )
    _atomic_write_text(stage / "README.md", _redact(card, secrets))
    return f"Upload {what} with hf-plugins"


def _link_tree(src: Path, dst: Path, secrets: list[str]) -> None:
    """Mirror ``src`` into ``dst`` with symlinks (no copy of the weights), skipping training leftovers;
    text files that contain a token are written redacted instead of linked."""
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(part.startswith(".") or part.startswith("checkpoint-") or part in ("__pycache__", "runs") for part in rel.parts):
            continue
        if rel.as_posix() == "README.md" or not path.is_file():
            continue
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if secrets and path.suffix in _TEXT_SUFFIXES and path.stat().st_size <= _TEXT_MAX_BYTES:
            data = path.read_bytes()
            if any(s.encode() in data for s in secrets):
                logger.warning("%s contains the Hub token; uploading it with the token redacted", rel.as_posix())
                target.write_text(_redact(data.decode("utf-8", errors="replace"), secrets), encoding="utf-8")
                continue
        try:
            target.symlink_to(path.resolve())
        except OSError:
            shutil.copy2(path, target)


def _classify(exc: BaseException) -> tuple[bool, int | None]:
    """(may be transient, HTTP status) of an exception or of one of its causes."""
    status = None
    seen = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        response = getattr(current, "response", None)
        code = getattr(response, "status_code", None)
        if isinstance(code, int):
            status = code
            return code == 429 or code >= 500, status
        module = type(current).__module__ or ""
        names = {c.__name__ for c in type(current).__mro__}
        if module.startswith(("httpx", "httpcore", "requests", "urllib3")) and names & {
            "TransportError", "NetworkError", "TimeoutException", "ConnectError", "ConnectionError", "RemoteProtocolError",
        }:
            return True, status
        if isinstance(current, (ConnectionError, TimeoutError)):
            return True, status
        current = current.__cause__ or current.__context__
    return False, status


def _describe(exc: BaseException) -> str:
    """A one-line cause: the exception and those it wraps that add information, with their types."""
    parts: list[str] = []
    current: BaseException | None = exc
    seen = set()
    while current is not None and id(current) not in seen and len(parts) < 3:
        seen.add(id(current))
        text = re.sub(r"\s*For more information check: \S+", "", " ".join(str(current).split()))
        if not any(text and text[:60] in earlier for earlier in parts):
            parts.append(f"{type(current).__name__}: {text}" if text else type(current).__name__)
        current = current.__cause__
    status = _classify(exc)[1]
    hint = {401: "the token was refused: check HF_TOKEN, the stored login or --token",
            403: "the token may not write to this namespace (a read-only token, or another user's namespace)"}
    return " <- ".join(parts) + (f" ({hint[status]})" if status in hint else "")


def _known_tokens(*extra: str | None) -> list[str]:
    """The tokens this process could use (explicit ones, HF_TOKEN, the stored login), for redaction."""
    from huggingface_hub.utils import get_token

    return [s for s in (*extra, get_token()) if isinstance(s, str) and s]


def _redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "***")
    text = re.sub(r"(?i)(bearer\s+)[^\s'\"]+", r"\1***", text)
    return re.sub(r"\bhf_[A-Za-z0-9]{16,}\b", "hf_***", text)


# ------------------------------------------------------------------------------------------------
# Small helpers
# ------------------------------------------------------------------------------------------------
def _read_json(path: Path) -> dict:
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    return data if isinstance(data, dict) else {}


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


__all__ = ["PublishError", "publish", "render_card", "template_path", "write_card"]
