"""Bottleneck adapters (Cappellazzo et al. 2023) as the peft method BOTTLENECK: placement, life cycle, AST positions."""

import json
import os
import subprocess
import sys
import textwrap

import pytest
import torch

import hf_plugins  # noqa: F401  (registers BOTTLENECK with peft)
from hf_plugins import BottleneckConfig, interpolate_ast_position_embeddings
from hf_plugins.peft_methods.bottleneck.layer import BottleneckLayer
from peft import get_peft_model
from safetensors.torch import load_file, save_file
from transformers import (
    ASTConfig,
    ASTForAudioClassification,
    BertConfig,
    BertModel,
    T5Config,
    T5EncoderModel,
    ViTConfig,
    ViTModel,
    Wav2Vec2Config,
    Wav2Vec2Model,
)

torch.set_num_threads(1)


def tiny_ast(max_length=48, seed=0):
    torch.manual_seed(seed)
    config = ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                       num_mel_bins=32, max_length=max_length, num_labels=3)
    model = ASTForAudioClassification(config).eval()
    with torch.no_grad():  # "pretrained": non-zero positions and tokens
        model.audio_spectrogram_transformer.embeddings.position_embeddings.normal_(std=0.5)
        model.audio_spectrogram_transformer.embeddings.cls_token.normal_()
    return model


def spectrograms(batch=3, frames=48, seed=1):
    return torch.randn(batch, frames, 32, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(preset="houlsby", mode="sequential"),
        dict(preset="pfeiffer", mode="parallel", scaling="learned"),
        dict(preset="pfeiffer", mode="parallel", adapter_block="conformer", conformer_kernel_size=3),
    ],
)
def test_identity_at_init_and_down_projection_not_zero(kwargs):
    model = tiny_ast()
    x = spectrograms()
    with torch.no_grad():
        reference = model(x).logits
    peft_model = get_peft_model(model, BottleneckConfig(**kwargs, modules_to_save=["classifier"]))
    peft_model.train()  # BatchNorm of the Conformer adapter in training mode too
    with torch.no_grad():
        torch.testing.assert_close(peft_model(x).logits, reference, rtol=0, atol=0)
    layers = [m for m in peft_model.modules() if isinstance(m, BottleneckLayer)]
    assert len(layers) == (4 if kwargs["preset"] == "houlsby" else 2)
    for layer in layers:
        adapter = layer.bottleneck_adapter["default"]
        first = adapter.down if hasattr(adapter, "down") else adapter.pointwise_in
        last = adapter.up if hasattr(adapter, "up") else adapter.pointwise_out
        assert last.weight.abs().sum() == 0 and first.weight.abs().sum() > 0  # not the reference's all-zero init


def test_only_adapter_and_saved_modules_train():
    model = tiny_ast()
    base_state = {k: v.clone() for k, v in model.state_dict().items()}
    config = BottleneckConfig(preset="houlsby", mode="parallel", modules_to_save=["classifier"],
                              train_layer_norms=True, reduction_factor=8)
    peft_model = get_peft_model(model, config)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all(
        ".bottleneck_adapter.default." in n or ".modules_to_save.default." in n for n in trainable
    ), sorted(trainable)
    saved = {n.split(".modules_to_save")[0].removeprefix("base_model.model.") for n in trainable if "modules_to_save" in n}
    assert saved == {
        "classifier",
        "audio_spectrogram_transformer.layernorm",
        *(f"audio_spectrogram_transformer.layers.{i}.layernorm_{w}" for i in (0, 1) for w in ("before", "after")),
    }
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    peft_model.train()
    labels = torch.tensor([0, 1, 2])
    for _ in range(3):
        loss = peft_model(spectrograms(), labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    for name, value in peft_model.get_base_model().state_dict().items():
        if "bottleneck_" in name or "modules_to_save" in name:
            continue
        original = name.replace(".base_layer", "").replace(".original_module", "")
        torch.testing.assert_close(value, base_state[original], rtol=0, atol=0, msg=name)
    layer = peft_model.get_base_model().audio_spectrogram_transformer.layers[0].mlp
    assert layer.bottleneck_adapter["default"].up.weight.abs().sum() > 0  # the up projection learns
    # unload gives the original modules back, merging is refused (adapters are non-linear)
    with pytest.raises(ValueError, match="cannot be merged"):
        peft_model.merge_and_unload()
    base = peft_model.unload()
    assert not any(isinstance(m, BottleneckLayer) for m in base.modules())


def test_save_load_fresh_process_exact(tmp_path):
    model = tiny_ast()
    model.save_pretrained(tmp_path / "base")
    config = BottleneckConfig(preset="houlsby", mode="sequential", adapter_block="conformer", scaling="learned",
                              conformer_kernel_size=3, init_weights=False, modules_to_save=["classifier"],
                              train_layer_norms=True)
    peft_model = get_peft_model(model, config)
    peft_model.train()
    optimizer = torch.optim.SGD([p for p in peft_model.parameters() if p.requires_grad], lr=0.1)
    for seed in range(2):  # moves weights, scales and BatchNorm statistics
        peft_model(spectrograms(seed=seed), labels=torch.tensor([0, 1, 2])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    peft_model.eval()
    x = spectrograms(seed=5)
    with torch.no_grad():
        expected = peft_model(x).logits
    peft_model.save_pretrained(tmp_path / "adapter")
    saved = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert saved["peft_type"] == "BOTTLENECK" and saved["adapter_block"] == "conformer"
    keys = load_file(tmp_path / "adapter" / "adapter_model.safetensors").keys()
    assert any("batch_norm.running_mean" in k for k in keys) and any("bottleneck_scale" in k for k in keys)
    assert not any(".default" in k for k in keys), [k for k in keys if ".default" in k][:3]  # peft's key scheme
    save_file({"x": x, "expected": expected}, tmp_path / "io.safetensors")
    script = textwrap.dedent(
        f"""
        import torch, hf_plugins
        from peft import PeftModel
        from safetensors.torch import load_file
        from transformers import ASTForAudioClassification
        io = load_file({str(tmp_path / "io.safetensors")!r})
        base = ASTForAudioClassification.from_pretrained({str(tmp_path / "base")!r})
        model = PeftModel.from_pretrained(base, {str(tmp_path / "adapter")!r}, adapter_name="other").eval()
        with torch.no_grad():
            torch.testing.assert_close(model(io["x"]).logits, io["expected"], rtol=0, atol=0)
        plain = ASTForAudioClassification.from_pretrained({str(tmp_path / "base")!r})
        plain.load_adapter({str(tmp_path / "adapter")!r})  # transformers' PeftAdapterMixin
        plain.eval()
        with torch.no_grad():
            torch.testing.assert_close(plain(io["x"]).logits, io["expected"], rtol=0, atol=0)
        print("RELOAD_OK")
        """
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert "RELOAD_OK" in result.stdout, result.stderr[-3000:]


def test_parallel_reads_sublayer_input_sequential_its_output():
    model = tiny_ast()
    block = model.audio_spectrogram_transformer.layers[0]
    x = torch.randn(2, 5, 32)
    with torch.no_grad():
        y = block.mlp(x)
    outputs = {}
    for mode in ("parallel", "sequential"):
        peft_model = get_peft_model(tiny_ast(), BottleneckConfig(location="ffn", mode=mode, init_weights=False,
                                                                 scaling=0.5, layers_to_transform=[0]))
        layer = peft_model.get_base_model().audio_spectrogram_transformer.layers[0].mlp
        assert isinstance(layer, BottleneckLayer)
        assert not isinstance(peft_model.get_base_model().audio_spectrogram_transformer.layers[1].mlp, BottleneckLayer)
        adapter = layer.bottleneck_adapter["default"]
        with torch.no_grad():
            outputs[mode] = layer(x)
            expected = y + 0.5 * adapter(x if mode == "parallel" else y)
        torch.testing.assert_close(outputs[mode], expected)
        with peft_model.disable_adapter(), torch.no_grad():
            torch.testing.assert_close(layer(x), y, rtol=0, atol=0)
    assert not torch.allclose(outputs["parallel"], outputs["sequential"])
    # attention returns (output, weights): only the output is adapted
    peft_model = get_peft_model(tiny_ast(), BottleneckConfig(location="mhsa", mode="parallel", init_weights=False))
    attention = peft_model.get_base_model().audio_spectrogram_transformer.layers[0].attention
    with torch.no_grad():
        out, _ = attention(x)
        base_out, _ = attention.base_layer(x)
        torch.testing.assert_close(out, base_out + attention.bottleneck_adapter["default"](x))


def test_several_adapters_set_adapter_and_disable():
    model = tiny_ast()
    x = spectrograms()
    with torch.no_grad():
        base = model(x).logits
    peft_model = get_peft_model(model, BottleneckConfig(preset="pfeiffer", mode="parallel", init_weights=False))
    peft_model.add_adapter("houlsby", BottleneckConfig(preset="houlsby", mode="sequential", init_weights=False))
    with torch.no_grad():
        first = peft_model(x).logits
        peft_model.set_adapter("houlsby")
        second = peft_model(x).logits
        with peft_model.disable_adapter():
            disabled = peft_model(x).logits
    assert not torch.allclose(first, second) and not torch.allclose(first, base)
    torch.testing.assert_close(disabled, base, rtol=0, atol=0)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all(".houlsby." in n for n in trainable)
    peft_model.delete_adapter("default")
    with torch.no_grad():
        torch.testing.assert_close(peft_model(x).logits, second, rtol=0, atol=0)


def test_position_embeddings_interpolated_never_reset():
    model = tiny_ast(max_length=48)
    embeddings = model.audio_spectrogram_transformer.embeddings
    f, t = embeddings.get_shape(model.config)  # (2, 4) patches
    with torch.no_grad():  # a ramp in time: bilinear interpolation keeps it linear inside the grid
        ramp = torch.arange(t, dtype=torch.float32).view(1, 1, t, 1).expand(1, f, t, 32).reshape(1, f * t, 32)
        embeddings.position_embeddings[:, 2:] = ramp
    special = embeddings.position_embeddings[:, :2].detach().clone()
    with pytest.warns(RuntimeWarning, match="all zero"):  # what ignore_mismatched_sizes leaves behind
        zero = tiny_ast()
        zero.audio_spectrogram_transformer.embeddings.position_embeddings.data.zero_()
        get_peft_model(zero, BottleneckConfig())
    peft_model = get_peft_model(model, BottleneckConfig(max_length=88, modules_to_save=["classifier"]))
    new = peft_model.get_base_model().audio_spectrogram_transformer.embeddings
    assert peft_model.get_base_model().config.max_length == 88
    new_f, new_t = new.get_shape(new.config)
    assert (new_f, new_t) == (f, 8) and new.position_embeddings.shape == (1, 2 + f * 8, 32)
    assert not new.position_embeddings.requires_grad
    torch.testing.assert_close(new.position_embeddings[:, :2], special)
    grid = new.position_embeddings[0, 2:, 0].view(f, new_t)
    expected = torch.nn.functional.interpolate(ramp[:, :, 0].view(1, 1, f, t), size=(f, new_t), mode="bilinear")
    torch.testing.assert_close(grid, expected[0, 0])
    steps = grid[0, 1:-1].diff()  # interior of the interpolated ramp: equal steps of t / new_t
    torch.testing.assert_close(steps, torch.full_like(steps, t / new_t))
    assert peft_model(spectrograms(frames=88)).logits.shape == (3, 3)
    # interpolating to the pretrained length is the identity
    again = tiny_ast()
    before = again.audio_spectrogram_transformer.embeddings.position_embeddings.detach().clone()
    interpolate_ast_position_embeddings(again, 48)
    torch.testing.assert_close(again.audio_spectrogram_transformer.embeddings.position_embeddings, before, rtol=0, atol=0)


def _names(model):
    return sorted(n for n, m in model.named_modules() if isinstance(m, BottleneckLayer))


def test_vit_bert_wav2vec2_targets_resolve_and_start_as_base():
    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             image_size=32, patch_size=16), add_pooling_layer=False).eval()
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = vit(pixel_values=pixels).last_hidden_state
    vit = get_peft_model(vit, BottleneckConfig(preset="houlsby", train_layer_norms=True))
    assert _names(vit) == [f"base_model.model.layers.{i}.{s}" for i in (0, 1) for s in ("attention", "mlp")]
    assert "layernorm" in vit.peft_config["default"].modules_to_save
    with torch.no_grad():
        torch.testing.assert_close(vit(pixel_values=pixels).last_hidden_state, ref, rtol=0, atol=0)

    bert_config = BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                             vocab_size=50, max_position_embeddings=16)
    ids = torch.randint(0, 50, (2, 7), generator=torch.Generator().manual_seed(0))
    for mode in ("parallel", "sequential"):
        torch.manual_seed(0)
        bert = BertModel(bert_config, add_pooling_layer=False).eval()
        with torch.no_grad():
            ref = bert(input_ids=ids).last_hidden_state
        bert = get_peft_model(bert, BottleneckConfig(preset="houlsby", mode=mode))
        assert _names(bert) == [f"base_model.model.encoder.layer.{i}.{s}" for i in (0, 1)
                                for s in ("attention.output", "output")]
        with torch.no_grad():  # the re-stated post-LN forward equals BertSelfOutput / BertOutput
            torch.testing.assert_close(bert(input_ids=ids).last_hidden_state, ref, rtol=0, atol=0)
    with pytest.raises(ValueError, match="post-LN"):
        get_peft_model(BertModel(bert_config), BottleneckConfig(train_layer_norms=True))

    w2v = Wav2Vec2Model(Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                       intermediate_size=64, conv_dim=(8, 8), conv_kernel=(10, 3),
                                       conv_stride=(5, 2), num_feat_extract_layers=2, num_conv_pos_embeddings=16,
                                       num_conv_pos_embedding_groups=2)).eval()
    audio = torch.randn(1, 400)
    with torch.no_grad():
        ref = w2v(audio).last_hidden_state
    w2v = get_peft_model(w2v, BottleneckConfig(preset="houlsby", mode="parallel"))
    assert _names(w2v) == [f"base_model.model.encoder.layers.{i}.{s}" for i in (0, 1)
                           for s in ("attention", "feed_forward")]
    with torch.no_grad():
        torch.testing.assert_close(w2v(audio).last_hidden_state, ref, rtol=0, atol=0)


def test_unsupported_block_raises_naming_it_and_target_modules_escape_hatch():
    config = T5Config(d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8, vocab_size=20)
    with pytest.raises(ValueError, match="T5Block"):
        get_peft_model(T5EncoderModel(config), BottleneckConfig())
    model = get_peft_model(T5EncoderModel(config), BottleneckConfig(target_modules=["DenseReluDense"]))
    assert _names(model) == ["base_model.model.encoder.block.0.layer.1.DenseReluDense"]
    with pytest.raises(ValueError, match="location='middle'"):
        BottleneckConfig(location="middle")
    with pytest.raises(ValueError, match="scaling"):
        BottleneckConfig(scaling="big")


def test_trainer_runs_bottleneck_adapter(tmp_path):
    from transformers import Trainer, TrainingArguments

    class Spectra(torch.utils.data.Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, i):
            return {"input_values": spectrograms(1, seed=i)[0], "labels": torch.tensor(i % 3)}

    peft_model = get_peft_model(tiny_ast(), BottleneckConfig(preset="pfeiffer", mode="parallel",
                                                             modules_to_save=["classifier"]))
    before = peft_model.get_base_model().audio_spectrogram_transformer.layers[0].mlp.bottleneck_adapter[
        "default"].up.weight.detach().clone()
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=2, per_device_train_batch_size=4, report_to=[],
                             use_cpu=True, save_strategy="no", learning_rate=1e-2, label_names=["labels"])
    Trainer(model=peft_model, args=args, train_dataset=Spectra()).train()
    after = peft_model.get_base_model().audio_spectrogram_transformer.layers[0].mlp.bottleneck_adapter[
        "default"].up.weight
    assert not torch.equal(before, after)


def test_recipe_tiny_trains_saves_and_reloads(tmp_path, data_dir, monkeypatch):
    import shutil

    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is needed to synthesise the pretraining words: apt-get install espeak-ng")
    from hf_plugins.data.audio import load_fsdd
    from hf_plugins.recipes import run_recipe
    from hf_plugins.recipes._evaluate import evaluate_folder

    monkeypatch.setenv("HFP_CACHE", str(tmp_path / "cache"))
    splits = load_fsdd(data_dir, max_per_speaker=10)
    assert {s for s in splits["test"].groups} == {"theo", "yweweler"} and not (
        set(splits["train"].groups) & set(splits["test"].groups))
    assert splits["train"].sampling_rate == 16000 and sorted(set(splits["train"].labels)) == list(range(10))
    folder = run_recipe("ast-adapter-fsdd", ["--tiny", "--max-steps", "3", "--method", "houlsby", "--mode", "parallel",
                                             "--output-dir", str(tmp_path / "out"), "--max-length", "64"])
    files = set(os.listdir(folder))
    assert {"adapter_config.json", "adapter_model.safetensors", "backbone", "metrics.json", "README.md",
            "preprocessor_config.json", "confusion_matrix.png"} <= files
    metrics = json.loads(open(os.path.join(folder, "metrics.json")).read())
    assert metrics["test"]["method"] == "houlsby-parallel" and 0 <= metrics["test"]["test_accuracy"] <= 1
    adapter = json.loads(open(os.path.join(folder, "adapter_config.json")).read())
    assert adapter["max_length"] == 64 and adapter["base_model_name_or_path"] is None
    reloaded = evaluate_folder(folder)  # backbone + adapter from the folder, interpolated again
    assert reloaded["test_accuracy"] == pytest.approx(metrics["test"]["test_accuracy"])
