"""Hub publishing and model cards, against the real huggingface_hub client and a Hub-compatible server.

The server (tests/hub_server.py) runs on 127.0.0.1 in a thread. huggingface_hub reads HF_ENDPOINT once, at
import, and transformers imports it, so the round trip through ``from_pretrained`` runs in a subprocess
whose environment points at the server; the other tests call ``publish(..., endpoint=server.url)``.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import sys
import textwrap
import traceback
import zlib
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from hub_server import HubServer  # noqa: E402

DEMO_RECIPE = "patchtsmixer-demo"
# Recognisable and not of the hf_... shape, so that only the explicit redaction can hide it.
SECRET = "tok-SECRET-9f3a7c51-do-not-leak"
USER = "hf-plugins-tester"


# ------------------------------------------------------------------------------------------------
# fixtures
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    server = HubServer(tmp_path_factory.mktemp("hub-root")).start()
    yield server
    server.stop()


BERT_CONFIG = dict(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory) -> Path:
    """A folder laid out as ``hf-plugins train`` writes it (config.json, safetensors, metrics.json, a PNG plot,
    README.md) for a paper with no template of its own, so its card is default.md. Written without torch:
    the tests in this process publish it and read its card but do not load it (the subprocess does)."""
    import numpy as np
    from safetensors.numpy import save_file

    from hf_plugins.hub import write_card

    out = tmp_path_factory.mktemp("bert") / "model"
    out.mkdir()
    config = {"model_type": "bert", "architectures": ["BertModel"], **BERT_CONFIG}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    weights = np.random.default_rng(0).standard_normal((BERT_CONFIG["vocab_size"], 16)).astype(np.float32)
    save_file({"embeddings.word_embeddings.weight": weights}, str(out / "model.safetensors"))
    _write_png(out / "training_loss.png")
    metrics = {
        "recipe": "bert-tiny", "paper": "no-such-paper", "description": "A tiny BERT encoder for the Hub tests.",
        "seed": 0, "max_steps": 2, "args": {"seed": 0, "tiny": True, "max_steps": 2, "output_dir": str(out)},
        "train": {"train_loss": 4.1, "train_runtime": 0.1},
        "test": {"test_loss": 3.5, "test_accuracy": 0.25, "test_runtime": 0.2, "test_samples_per_second": 10.0,
                 "epoch": 1.0, "naive_accuracy": 0.125},
        "log_history": [{"step": 1, "loss": 4.2}, {"step": 2, "loss": 4.0}],
        "plots": ["training_loss.png"],
        "card": {"pipeline_tag": "fill-mask", "tags": ["tiny"], "datasets": ["wikitext"], "license": "mit",
                 "dataset_description": "Random token ids (a stand-in for the recipe's data)."},
        "versions": {"python": "3", "transformers": "5"},
    }
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    write_card(out)
    return out


@pytest.fixture(autouse=True)
def plain_lfs(monkeypatch):
    """In this process too, upload with plain git-LFS as HF_HUB_DISABLE_XET=1 would (the test server has no Xet)."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)


def _write_png(path: Path, size: int = 4) -> None:
    """A real (grey) PNG, without importing matplotlib."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    raw = b"".join(b"\x00" + b"\x80" * size for _ in range(size))
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0))
    path.write_bytes(png + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def _hub_env(hub, tmp_path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT")}
    env.update(HF_ENDPOINT=hub.url, HF_HUB_DISABLE_XET="1", HF_TOKEN=SECRET, HF_HOME=str(tmp_path / "hf-home"),
               HF_HUB_DISABLE_TELEMETRY="1", HF_HUB_DISABLE_PROGRESS_BARS="1", TOKENIZERS_PARALLELISM="false")
    return env


def _files_containing(root: Path, needle: str) -> list[str]:
    return [str(p) for p in root.rglob("*") if p.is_file() and needle.encode() in p.read_bytes()]


# ------------------------------------------------------------------------------------------------
# the round trip: publish -> from_pretrained -> identical outputs (a fresh process with HF_ENDPOINT set)
# ------------------------------------------------------------------------------------------------
ROUND_TRIP = textwrap.dedent(
    """
    import json, sys
    import torch, transformers
    import hf_plugins
    from hf_plugins.hub import _auto_class, publish

    folder, repo, bert_folder, demo = sys.argv[1:5]
    out = {}
    torch.manual_seed(0)

    # 0. the folder that `hf-plugins train` writes: the tiny demo recipe once it exists, until then a tiny
    #    BERT saved from its config next to the metrics.json/plot/card of bert_folder (in a fresh process,
    #    so that no state of the test process reaches Trainer/accelerate)
    from hf_plugins.recipes import available_recipes, run_recipe
    if demo in available_recipes():
        run_recipe(demo, ["--tiny", "--max-steps", "2", "--output-dir", folder])
        out["trained"] = demo
    else:
        import shutil
        from transformers import BertConfig, BertModel
        from hf_plugins.hub import write_card
        shutil.copytree(bert_folder, folder)
        cfg = json.load(open(bert_folder + "/config.json"))
        BertModel(BertConfig(**{k: v for k, v in cfg.items() if k not in ("model_type", "architectures")})).save_pretrained(folder)
        write_card(folder)
        out["trained"] = "bert"

    def inputs_for(model):
        cfg = model.config
        if model.main_input_name == "input_ids":
            return {"input_ids": torch.randint(0, cfg.vocab_size, (2, 7))}
        if model.main_input_name == "past_values":
            return {"past_values": torch.randn(2, cfg.context_length, cfg.num_input_channels)}
        raise SystemExit(f"no test input for {type(model).__name__} ({model.main_input_name})")

    def same(a, b, x):
        with torch.no_grad():
            ya, yb = a(**x), b(**x)
        ya = ya[0] if isinstance(ya, (tuple, list)) or hasattr(ya, "to_tuple") else ya
        yb = yb[0] if isinstance(yb, (tuple, list)) or hasattr(yb, "to_tuple") else yb
        torch.testing.assert_close(ya, yb, rtol=0, atol=0)
        sa, sb = a.state_dict(), b.state_dict()
        assert sa.keys() == sb.keys()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
        return True

    # 1. a trained folder, loaded back with the Auto class its card names
    auto = getattr(transformers, _auto_class(json.load(open(folder + "/config.json"))))
    out["url"] = publish(folder, repo)
    local, remote = auto.from_pretrained(folder).eval(), auto.from_pretrained(repo).eval()
    out["folder_identical"] = same(local, remote, inputs_for(local))
    out["auto_class"] = auto.__name__
    spec = hf_plugins.registered_plugins().get(local.config.model_type)
    out["auto_class_is_registered"] = spec is None or auto.__name__ in spec.auto
    # 2. publishing the same folder again is fine (nothing changed: no new commit)
    out["url_again"] = publish(folder, repo)

    # 3. a model object, then 4. a peft adapter on top of it (PeftModel.push_to_hub style)
    from transformers import AutoModel, BertConfig, BertModel
    cfg = json.load(open(bert_folder + "/config.json"))
    bert = BertModel(BertConfig(**{k: v for k, v in cfg.items() if k not in ("model_type", "architectures")})).eval()
    publish(bert, repo + "-object")
    x = {"input_ids": torch.randint(0, 64, (2, 5))}
    out["object_identical"] = same(bert, AutoModel.from_pretrained(repo + "-object").eval(), x)

    from peft import AutoPeftModel, LoraConfig, get_peft_model
    base = AutoModel.from_pretrained(repo + "-object")
    lora = get_peft_model(base, LoraConfig(r=2, target_modules=["query", "value"], init_lora_weights=False)).eval()
    publish(lora, repo + "-lora")
    loaded = AutoPeftModel.from_pretrained(repo + "-lora").eval()
    with torch.no_grad():
        torch.testing.assert_close(lora(**x).last_hidden_state, loaded(**x).last_hidden_state, rtol=0, atol=0)
        plain = AutoModel.from_pretrained(repo + "-object").eval()(**x).last_hidden_state
    out["adapter_changes_output"] = not torch.equal(plain, loaded(**x).last_hidden_state)
    out["adapter_base"] = loaded.peft_config["default"].base_model_name_or_path
    print("RESULT " + json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def round_trip(hub, bert_folder, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("round-trip")
    repo, folder = f"{USER}/round-trip", tmp / "trained"
    proc = subprocess.run(
        [sys.executable, "-c", ROUND_TRIP, str(folder), repo, str(bert_folder), DEMO_RECIPE],
        env=_hub_env(hub, tmp), capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    assert SECRET not in proc.stdout + proc.stderr  # HF_TOKEN in that process: no log shows it
    line = [l for l in proc.stdout.splitlines() if l.startswith("RESULT ")][-1]
    return {"repo": repo, "folder": folder, "result": json.loads(line[7:])}


def test_round_trip_publish_then_from_pretrained_gives_identical_outputs(round_trip, hub):
    result = round_trip["result"]
    assert result["url"] == result["url_again"] == f"{hub.url}/{round_trip['repo']}"
    assert result["folder_identical"] and result["object_identical"]
    # the card's Auto class is the one the plugin registered the architecture with
    assert result["auto_class_is_registered"] and (result["trained"] != "bert" or result["auto_class"] == "AutoModel")
    # The weights went through the LFS batch + PUT path, the card through validate-yaml.
    assert any(m == "PUT" and p.startswith("/lfs-upload/") for m, p in hub.requests)
    assert ("POST", "/api/validate-yaml") in hub.requests


def test_peft_adapter_round_trip(round_trip, hub):
    from huggingface_hub import HfApi

    result = round_trip["result"]
    assert result["adapter_changes_output"], "the adapter should change the base model's output"
    assert result["adapter_base"] == round_trip["repo"] + "-object"
    api = HfApi(endpoint=hub.url, token=SECRET)
    files = set(api.list_repo_files(round_trip["repo"] + "-lora"))
    assert {"adapter_config.json", "adapter_model.safetensors", "README.md"} <= files
    info = api.model_info(round_trip["repo"] + "-lora")  # the server reads these from the card's metadata
    assert info.library_name == "peft" and {"hf-plugins", "peft", "lora"} <= set(info.tags)


def test_published_repo_holds_weights_card_and_plots(round_trip, hub, tmp_path):
    import yaml
    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi(endpoint=hub.url, token=SECRET)
    repo, trained_folder = round_trip["repo"], round_trip["folder"]
    files = set(api.list_repo_files(repo))
    assert {"config.json", "model.safetensors", "README.md", "metrics.json"} <= files
    metrics = json.loads((trained_folder / "metrics.json").read_text())
    assert set(metrics["plots"]) <= files and metrics["plots"]
    assert not any(f.endswith((".bin", ".pt", ".pkl")) for f in files)
    info = api.model_info(repo, files_metadata=True)
    weights = next(s for s in info.siblings if s.rfilename == "model.safetensors")
    assert weights.lfs is not None and weights.size == (trained_folder / "model.safetensors").stat().st_size

    readme = Path(hf_hub_download(repo, "README.md", endpoint=hub.url, token=SECRET, cache_dir=tmp_path)).read_text()
    front = yaml.safe_load(readme.split("---\n")[1])
    assert front["library_name"] == "transformers" and "hf-plugins" in front["tags"]
    assert front["pipeline_tag"] == metrics["card"]["pipeline_tag"]
    assert metrics["paper"] in front["tags"]
    # the card published is re-rendered for the repo (its usage code names the repo id); the local
    # folder's card is left as it was
    assert repo in readme and repo not in (trained_folder / "README.md").read_text()
    for plot in metrics["plots"]:
        assert plot in readme


def test_card_content_and_metadata(bert_folder):
    import yaml
    from huggingface_hub import ModelCard

    from hf_plugins.hub import render_card

    card = render_card(bert_folder, repo_id="someone/model")
    text = str(card)
    assert text.startswith("---\n")
    front = yaml.safe_load(text.split("---\n")[1])
    metrics = json.loads((bert_folder / "metrics.json").read_text())
    assert metrics["test"] == {"test_loss": 3.5, "test_accuracy": 0.25, "test_runtime": 0.2,
                               "test_samples_per_second": 10.0, "epoch": 1.0, "naive_accuracy": 0.125}
    test = {"loss": 3.5, "accuracy": 0.25, "naive_accuracy": 0.125}
    # the metrics table: every test metric, none of the timing entries
    for name, value in test.items():
        assert f"| {name} | {value:.6g} |" in text.splitlines(), name
    assert "| runtime |" not in text and "samples_per_second" not in text
    # model-index holds the model's own numbers; the baseline stays in the table only
    results = front["model-index"][0]["results"][0]
    assert {m["type"]: m["value"] for m in results["metrics"]} == pytest.approx({"loss": 3.5, "accuracy": 0.25})
    assert results["dataset"]["split"] == "test"
    for section in ("## Intended use and limits", "## Training data", "## Evaluation", "## How to use", "## Citation"):
        assert section in text, section
    assert metrics["card"]["dataset_description"] in text
    assert "![training loss](training_loss.png)" in text
    assert 'AutoModel.from_pretrained("someone/model")' in text
    assert "hf-plugins train bert-tiny --max-steps 2 --seed 0" in text
    # the metadata survives a load by huggingface_hub itself
    loaded = ModelCard(text)
    assert loaded.data.library_name == "transformers"
    assert loaded.data.license == metrics["card"].get("license", "apache-2.0")
    assert loaded.data.eval_results and loaded.data.eval_results[0].dataset_split == "test"
    assert loaded.data.tags == ["hf-plugins", "no-such-paper", "tiny", "bert"]
    assert loaded.data.pipeline_tag == "fill-mask" and loaded.data.datasets == ["wikitext"]


def test_card_for_a_folder_without_metrics(tmp_path):
    from hf_plugins.hub import render_card, template_path, write_card

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    path = write_card(tmp_path)
    text = path.read_text()
    assert path == tmp_path / "README.md" and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert "No test metrics were recorded" in text and "model-index" not in text
    assert "AutoModelForCausalLM" in text and "## Citation" in text
    assert template_path("no-such-paper").name == "default.md"
    assert str(render_card(tmp_path)) == text
    assert f'from_pretrained("<your-namespace>/{tmp_path.name}")' in text
    # the runner renders the card in a temporary sibling: the placeholder names the final folder
    (tmp_path / "metrics.json").write_text(json.dumps({"recipe": "llama-x", "args": {"output_dir": "/a/final-name"}}))
    assert 'from_pretrained("<your-namespace>/final-name")' in str(render_card(tmp_path))


def test_republishing_the_same_repo_makes_a_new_commit(hub, bert_folder, tmp_path):
    import shutil

    from huggingface_hub import HfApi, hf_hub_download

    from hf_plugins.hub import publish

    folder = tmp_path / "model"
    shutil.copytree(bert_folder, folder)
    repo = f"{USER}/republish"
    api = HfApi(endpoint=hub.url, token=SECRET)
    publish(folder, repo, token=SECRET, endpoint=hub.url)
    first = api.model_info(repo).sha
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["description"] = "Second version of the description."
    (folder / "metrics.json").write_text(json.dumps(metrics))
    url = publish(folder, repo, token=SECRET, endpoint=hub.url, commit_message="v2")
    assert url == f"{hub.url}/{repo}"
    commits = api.list_repo_commits(repo)
    assert commits[0].title == "v2" and commits[0].commit_id != first and len(commits) == 3  # initial, v1, v2
    readme = Path(hf_hub_download(repo, "README.md", endpoint=hub.url, token=SECRET, cache_dir=tmp_path / "c")).read_text()
    assert "Second version of the description." in readme


def test_transient_server_errors_are_retried(hub, bert_folder, caplog, monkeypatch):
    from hf_plugins import hub as hub_module

    monkeypatch.setattr(hub_module, "RETRY_BASE_WAIT", 0.05)
    hub.fail[r"^/api/repos/create$"] = 2  # two 503 answers, then the server works
    before = sum(1 for m, p in hub.requests if p == "/api/repos/create")
    with caplog.at_level("DEBUG"):
        url = hub_module.publish(bert_folder, f"{USER}/flaky", token=SECRET, endpoint=hub.url, max_retries=3)
    assert url.endswith(f"/{USER}/flaky")
    assert sum(1 for m, p in hub.requests if p == "/api/repos/create") - before == 3
    assert caplog.text.count("retrying in") == 2
    assert SECRET not in caplog.text


def test_server_down_retries_then_raises_a_clear_error(bert_folder, caplog, monkeypatch):
    from hf_plugins import hub as hub_module

    monkeypatch.setattr(hub_module, "RETRY_BASE_WAIT", 0.05)
    with socket.socket() as sock:  # a port on which nothing listens
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with caplog.at_level("DEBUG"), pytest.raises(hub_module.PublishError) as info:
        hub_module.publish(bert_folder, f"{USER}/nowhere", token=SECRET, endpoint=f"http://127.0.0.1:{port}", max_retries=2)
    err = info.value
    message = str(err)
    assert f"'{USER}/nowhere'" in message and "after 3 attempts" in message and "Connect" in message
    assert err.attempts == 3 and err.repo_id == f"{USER}/nowhere"
    assert caplog.text.count("retrying in") == 2
    assert SECRET not in message and SECRET not in caplog.text
    assert SECRET not in "".join(traceback.format_exception(err))


def test_token_never_leaks(hub, bert_folder, tmp_path, caplog, monkeypatch):
    """The token in a failing request, in metrics.json's options, in logs: it shows up nowhere."""
    import shutil

    from hf_plugins.hub import PublishError, publish, write_card

    monkeypatch.setenv("HF_TOKEN", SECRET)
    folder = tmp_path / "model"
    shutil.copytree(bert_folder, folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["args"]["hub_token"] = SECRET  # a user passed the token as a recipe option
    (folder / "metrics.json").write_text(json.dumps(metrics))
    with caplog.at_level("DEBUG"):
        write_card(folder)  # the local card does not show it
        assert SECRET not in (folder / "README.md").read_text()

        # 1. a rejected token: 401, not retried, the error names the repo and the cause
        monkeypatch.setattr(hub, "tokens", {"the-only-valid-token"})
        with pytest.raises(PublishError) as info:
            publish(folder, f"{USER}/leak-check", token=SECRET, endpoint=hub.url)
        monkeypatch.setattr(hub, "tokens", None)
        message = str(info.value)
        assert f"'{USER}/leak-check'" in message and "401" in message and "not retried" in message
        assert info.value.status_code == 401 and info.value.attempts == 1
        assert SECRET not in message and SECRET not in repr(info.value)
        assert SECRET not in "".join(traceback.format_exception(info.value))

        # 2. a successful upload of a folder whose metrics.json holds the token
        publish(folder, f"{USER}/leak-check", token=SECRET, endpoint=hub.url)
    assert SECRET not in caplog.text
    assert _files_containing(hub.store.root, SECRET) == []  # nothing uploaded holds it
    assert _files_containing(folder, SECRET) == [str(folder / "metrics.json")]  # only the user's own file


def test_cli_publish(hub, bert_folder, monkeypatch, capsys):
    from huggingface_hub import constants

    from hf_plugins.cli import main

    monkeypatch.setattr(constants, "ENDPOINT", hub.url)  # what HF_ENDPOINT sets at import
    assert main(["publish", str(bert_folder), "--repo-id", f"{USER}/from-cli", "--token", SECRET]) == 0
    out = capsys.readouterr().out
    assert f"{hub.url}/{USER}/from-cli" in out and SECRET not in out


def test_publish_rejects_bad_input(tmp_path):
    from hf_plugins.hub import publish

    with pytest.raises(FileNotFoundError, match="not a model folder"):
        publish(tmp_path, f"{USER}/x", endpoint="http://127.0.0.1:9")
    with pytest.raises(ValueError, match="repo_id"):
        publish(tmp_path, "a/b/c", endpoint="http://127.0.0.1:9")
    with pytest.raises(TypeError, match="save_pretrained"):
        publish(object(), f"{USER}/x", endpoint="http://127.0.0.1:9")


def test_server_speaks_the_hub_protocol(hub, tmp_path):
    """The parts of the protocol publish() does not reach: tree, paths-info, refs, Range, deletes."""
    import urllib.request

    from huggingface_hub import HfApi, hf_hub_download

    api = HfApi(endpoint=hub.url, token=SECRET)
    repo = f"{USER}/protocol"
    api.create_repo(repo)
    blob = bytes(range(256)) * 64
    api.upload_file(path_or_fileobj=blob, path_in_repo="sub/data.bin", repo_id=repo)
    api.upload_file(path_or_fileobj=b"hello", path_in_repo="sub/note.txt", repo_id=repo)
    top = {(type(e).__name__, e.path) for e in api.list_repo_tree(repo)}
    assert top == {("RepoFile", ".gitattributes"), ("RepoFolder", "sub")}
    assert {e.path for e in api.list_repo_tree(repo, recursive=True)} == {".gitattributes", "sub", "sub/data.bin", "sub/note.txt"}
    info = {e.path: e for e in api.get_paths_info(repo, ["sub/data.bin", "sub/note.txt", "missing"])}
    assert set(info) == {"sub/data.bin", "sub/note.txt"}
    assert info["sub/data.bin"].lfs.size == len(blob) and info["sub/note.txt"].lfs is None
    head = api.list_repo_refs(repo).branches[0]
    assert head.name == "main" and head.target_commit == api.model_info(repo).sha
    commits = api.list_repo_commits(repo)
    assert [c.title for c in commits][-1] == "initial commit" and len(commits) == 3
    # a file at an older commit is still there; a Range request returns the slice
    path = hf_hub_download(repo, "sub/data.bin", revision=commits[1].commit_id, endpoint=hub.url, cache_dir=tmp_path)
    assert Path(path).read_bytes() == blob
    request = urllib.request.Request(f"{hub.url}/{repo}/resolve/main/sub/data.bin", headers={"Range": "bytes=10-19"})
    with urllib.request.urlopen(request) as response:
        assert response.status == 206 and response.read() == blob[10:20]
        assert response.headers["X-Linked-Size"] == str(len(blob)) and response.headers["X-Repo-Commit"] == head.target_commit
    api.delete_file("sub/note.txt", repo)
    assert not api.file_exists(repo, "sub/note.txt") and api.file_exists(repo, "sub/data.bin")
    api.delete_repo(repo)
    assert not api.repo_exists(repo)


def test_server_runs_as_a_process(tmp_path):
    from huggingface_hub import HfApi

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, str(Path(__file__).with_name("hub_server.py")), "--port", str(port), "--root", str(tmp_path)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert f"http://127.0.0.1:{port}" in server.stdout.readline()
        api = HfApi(endpoint=f"http://127.0.0.1:{port}", token=SECRET)
        assert api.whoami()["name"] == USER
        assert api.create_repo(f"{USER}/p").endswith(f"/{USER}/p")
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert (tmp_path / "repos" / "model" / USER / "p.json").is_file()
