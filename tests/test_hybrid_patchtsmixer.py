"""HybridPatchTSMixer: parity with transformers' PatchTSMixer, the reconciliation heads, V-TSMixer,
exogenous channels, masked pretraining, save/load, and the ETTh1 recipe."""

import json
import random

import pytest
import torch
from transformers import (
    AutoConfig,
    AutoModelForTimeSeriesPrediction,
    PatchTSMixerConfig,
    PatchTSMixerForPrediction,
    PatchTSMixerForPretraining,
)

import hf_plugins
from hf_plugins import (
    HybridPatchTSMixerConfig,
    HybridPatchTSMixerForPrediction,
    HybridPatchTSMixerForPretraining,
)

SMALL = dict(context_length=32, prediction_length=12, num_input_channels=3, patch_length=8, patch_stride=4,
             d_model=8, num_layers=2)


def small(**kwargs):
    return HybridPatchTSMixerConfig(**{**SMALL, **kwargs})


def batch(config, n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    past = torch.randn(n, config.context_length, config.num_input_channels, generator=g) * 3 + 1
    future = torch.randn(n, config.prediction_length, config.num_input_channels, generator=g) * 3 + 1
    return past, future


def random_patchtsmixer_config(rng: random.Random, mode: str) -> PatchTSMixerConfig:
    patch = rng.choice([4, 8])
    return PatchTSMixerConfig(
        context_length=rng.choice([32, 40]),
        prediction_length=rng.choice([5, 12]),
        num_input_channels=rng.choice([2, 3]),
        patch_length=patch,
        patch_stride=rng.choice([patch // 2, patch]),
        d_model=rng.choice([4, 8]),
        num_layers=rng.choice([1, 2]),
        expansion_factor=rng.choice([2, 3]),
        mode=mode,
        gated_attn=rng.random() < 0.7,
        self_attn=rng.random() < 0.4,
        use_positional_encoding=rng.random() < 0.5,
        norm_mlp=rng.choice(["LayerNorm", "BatchNorm"]),
        scaling=rng.choice(["std", "mean", None]),
        prediction_channel_indices=rng.choice([None, [0], [1, 0]]),
    )


@pytest.mark.parametrize("mode", ["common_channel", "mix_channel"])
def test_heads_off_equals_patchtsmixer_checkpoint(mode, tmp_path):
    rng = random.Random(hash(mode) % 1000)
    for trial in range(3):
        torch.manual_seed(trial)
        config = random_patchtsmixer_config(rng, mode)
        reference = PatchTSMixerForPrediction(config).eval()
        reference.save_pretrained(tmp_path / f"ref{trial}")
        ours = HybridPatchTSMixerForPrediction.from_pretrained(tmp_path / f"ref{trial}").eval()
        assert ours.hierarchy_head is None and ours.cross_channel_head is None
        past, future = batch(config, seed=trial)
        with torch.no_grad():
            a = reference(past_values=past, future_values=future)
            b = ours(past_values=past, future_values=future)
        torch.testing.assert_close(b.prediction_outputs, a.prediction_outputs, rtol=0, atol=0)
        torch.testing.assert_close(b.loss, a.loss, rtol=0, atol=0)
        torch.testing.assert_close(b.loc, a.loc, rtol=0, atol=0)
        # training mode too (dropout off so it is deterministic): same gradients on the same weights
        reference.train(), ours.train()
        for model in (reference, ours):
            for module in model.modules():
                if isinstance(module, torch.nn.Dropout):
                    module.p = 0.0
                elif isinstance(getattr(module, "dropout", None), float):  # self-attention's functional dropout
                    module.dropout = 0.0
        reference(past_values=past, future_values=future).loss.backward()
        ours(past_values=past, future_values=future).loss.backward()
        ref_grads = dict(reference.named_parameters())
        for name, param in ours.named_parameters():
            # also: the fixed sin-cos encoding stays frozen after a reload (transformers' own reload unfreezes it)
            assert param.requires_grad == ref_grads[name].requires_grad, name
            torch.testing.assert_close(param.grad, ref_grads[name].grad, rtol=1e-6, atol=1e-7)
        # in-memory conversion gives the same model
        converted = HybridPatchTSMixerForPrediction.from_patchtsmixer(reference.eval()).eval()
        with torch.no_grad():  # (BatchNorm statistics moved in the training step above: compare anew)
            torch.testing.assert_close(converted(past_values=past).prediction_outputs,
                                       reference(past_values=past).prediction_outputs, rtol=0, atol=0)


def test_distribution_head_matches_patchtsmixer(tmp_path):
    torch.manual_seed(0)
    config = PatchTSMixerConfig(**SMALL, loss="nll", distribution_output="normal")
    reference = PatchTSMixerForPrediction(config).eval()
    reference.save_pretrained(tmp_path)
    ours = HybridPatchTSMixerForPrediction.from_pretrained(tmp_path).eval()
    past, future = batch(config)
    a, b = reference(past_values=past, future_values=future), ours(past_values=past, future_values=future)
    torch.testing.assert_close(b.loss, a.loss, rtol=0, atol=0)
    for x, y in zip(b.prediction_outputs, a.prediction_outputs):
        torch.testing.assert_close(x, y, rtol=0, atol=0)


def _train(model, past, future, steps=15, lr=1e-2):
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    losses = []
    for _ in range(steps):
        loss = model(past_values=past, future_values=future).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("heads", [dict(use_cross_channel_head=True), dict(use_hierarchy_head=True)])
def test_each_head_starts_as_identity_then_trains_and_changes_output(heads):
    torch.manual_seed(0)
    config = small(dropout=0.0, head_dropout=0.0, **heads)
    model = HybridPatchTSMixerForPrediction(config)
    past, future = batch(config, n=8)
    with torch.no_grad():
        out = model.eval()(past_values=past)
    torch.testing.assert_close(out.prediction_outputs, out.base_prediction_outputs, rtol=0, atol=0)
    head = model.cross_channel_head if heads.get("use_cross_channel_head") else model.hierarchy_head
    before = {k: v.clone() for k, v in head.state_dict().items()}
    losses = _train(model, past, future)
    assert losses[-1] < losses[0]
    assert all(not torch.equal(before[k], v) for k, v in head.state_dict().items())
    with torch.no_grad():
        out = model.eval()(past_values=past)
    assert (out.prediction_outputs - out.base_prediction_outputs).abs().max() > 1e-3


def test_cross_channel_head_sees_all_channels_within_the_window_only():
    torch.manual_seed(0)
    config = small(use_cross_channel_head=True, reconciliation_context=2)
    head = HybridPatchTSMixerForPrediction(config).cross_channel_head.eval()
    torch.nn.init.normal_(head.projection.weight)  # leave the zero init behind
    y = torch.randn(2, config.prediction_length, config.num_input_channels)
    changed = y.clone()
    changed[:, 6, 1] += 5.0  # one step of one channel
    delta = ((head(changed) - changed) - (head(y) - y)).abs().sum(dim=0)  # corrections only: (horizon, channels)
    touched = delta.sum(-1) > 1e-6
    assert touched.tolist() == [4 <= t <= 8 for t in range(config.prediction_length)]
    assert (delta[6] > 1e-6).all()  # every channel is corrected from channel 1


def test_channel_independence_flatten_and_cross_channel_modes():
    torch.manual_seed(0)
    past, _ = batch(small())
    poked = past.clone()
    poked[:, :, 1] += torch.randn_like(poked[:, :, 1])

    def channel0_changes(config):
        model = HybridPatchTSMixerForPrediction(config).eval()
        if model.cross_channel_head is not None:
            torch.nn.init.normal_(model.cross_channel_head.projection.weight)
        with torch.no_grad():
            a, b = model(past_values=past).prediction_outputs, model(past_values=poked).prediction_outputs
        return (a[..., 0] - b[..., 0]).abs().max().item() > 1e-5

    assert not channel0_changes(small())  # CI-TSMixer: channel 0 never sees channel 1
    assert channel0_changes(small(use_cross_channel_head=True))  # hybrid: the CC head mixes channels
    assert channel0_changes(small(mode="flatten"))  # V-TSMixer
    assert channel0_changes(small(mode="mix_channel"))  # IC-TSMixer


def test_hierarchy_aggregation_and_losses():
    torch.manual_seed(0)
    config = small(prediction_length=10, hierarchy_patch_length=4, use_hierarchy_head=True,
                   hierarchy_aggregate_loss_weight=0.5, hierarchy_consistency_loss_weight=2.0)
    model = HybridPatchTSMixerForPrediction(config).eval()
    head = model.hierarchy_head
    assert head.num_aggregates == 3
    y = torch.randn(2, 10, 3)
    expected = torch.stack([y[:, 0:4].mean(1), y[:, 4:8].mean(1), y[:, 8:10].mean(1)], dim=1)
    torch.testing.assert_close(head.aggregate(y), expected)

    past, future = batch(config)
    out = model(past_values=past, future_values=future)
    agg = head.aggregate
    torch.testing.assert_close(out.forecast_loss, torch.nn.functional.mse_loss(out.prediction_outputs, future))
    torch.testing.assert_close(out.aggregate_loss, torch.nn.functional.mse_loss(out.aggregate_outputs, agg(future)))
    torch.testing.assert_close(out.loss, out.forecast_loss + 0.5 * out.aggregate_loss + 2.0 * out.consistency_loss)
    assert out.consistency_loss > 1e-4
    # the consistency loss aggregates the base forecasts (default) or the reconciled ones
    with torch.no_grad():
        head.reconcile_block.weight.normal_(0, 0.1)  # reconciled != base (the block starts at zero)
    out = model(past_values=past, future_values=future)
    assert not torch.allclose(out.prediction_outputs, out.base_prediction_outputs)
    mse = torch.nn.functional.mse_loss
    torch.testing.assert_close(out.consistency_loss, mse(agg(out.base_prediction_outputs), out.aggregate_outputs))
    model.config.hierarchy_consistency = "reconciled"
    out = model(past_values=past, future_values=future)
    torch.testing.assert_close(out.consistency_loss, mse(agg(out.prediction_outputs), out.aggregate_outputs))
    model.config.hierarchy_consistency = "base"

    # aggregate forecasts that are exactly the aggregated base forecasts: the consistency loss vanishes
    pool = agg(torch.eye(10).unsqueeze(0)).squeeze(0)  # (3 aggregates, 10 steps) averaging matrix
    with torch.no_grad():
        head.aggregate_block.weight.copy_(pool @ model.head.base_forecast_block.weight)
        head.aggregate_block.bias.copy_(pool @ model.head.base_forecast_block.bias)
    out = model(past_values=past, future_values=future)
    assert out.consistency_loss.item() < 1e-10


def test_flatten_mode_and_exogenous_channels_end_to_end():
    torch.manual_seed(0)
    config = small(mode="flatten", prediction_channel_indices=[2], use_cross_channel_head=True,
                   use_hierarchy_head=True, dropout=0.0, head_dropout=0.0)
    model = HybridPatchTSMixerForPrediction(config)
    past, future = batch(config, n=16)
    out_all = model(past_values=past, future_values=future)  # transformers' contract: all channels
    out_target = model(past_values=past, future_values=future[..., [2]])  # only the forecast channel
    assert out_all.prediction_outputs.shape == (16, 12, 1)
    torch.testing.assert_close(out_all.loss, out_target.loss)
    losses = _train(model, past, future[..., [2]])
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="future_values"):
        model(past_values=past, future_values=future[..., :2])
    with pytest.raises(ValueError, match="past_values"):
        model(past_values=past[:, :-1])


@pytest.mark.parametrize("mode", ["common_channel", "flatten"])
def test_masked_pretraining_backbone_loads_into_forecaster(mode, tmp_path):
    torch.manual_seed(0)
    config = small(mode=mode, mask_type="random", random_mask_ratio=0.4)
    pretrainer = HybridPatchTSMixerForPretraining(config)
    past, _ = batch(config, n=16)
    losses = _train(pretrainer, past, None, steps=8)
    assert losses[-1] < losses[0]
    out = pretrainer(past_values=past)
    assert out.prediction_outputs.shape == (16, 3, config.num_patches, config.patch_length)
    pretrainer.save_pretrained(tmp_path)
    forecaster = HybridPatchTSMixerForPrediction.from_pretrained(tmp_path, use_cross_channel_head=True)
    state = forecaster.model.state_dict()
    for name, value in pretrainer.model.state_dict().items():
        torch.testing.assert_close(state[name], value, rtol=0, atol=0)
    assert forecaster(past_values=past).prediction_outputs.shape == (16, 12, 3)


def test_transformers_pretraining_checkpoint_loads(tmp_path):
    torch.manual_seed(0)
    pretrainer = PatchTSMixerForPretraining(PatchTSMixerConfig(**SMALL))
    pretrainer.save_pretrained(tmp_path)
    forecaster = HybridPatchTSMixerForPrediction.from_pretrained(tmp_path, use_hierarchy_head=True)
    torch.testing.assert_close(forecaster.model.encoder.patcher.weight, pretrainer.model.encoder.patcher.weight)


def test_save_load_roundtrip_and_auto_classes(tmp_path):
    torch.manual_seed(0)
    config = small(use_cross_channel_head=True, use_hierarchy_head=True, mode="mix_channel")
    model = HybridPatchTSMixerForPrediction(config).eval()
    past, _ = batch(config)
    _train(model, past, batch(config)[1], steps=2)
    model.eval()
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file() and not list(tmp_path.glob("*.bin"))
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "hybrid_patchtsmixer"
    assert isinstance(AutoConfig.from_pretrained(tmp_path), HybridPatchTSMixerConfig)
    loaded = AutoModelForTimeSeriesPrediction.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, HybridPatchTSMixerForPrediction)
    with torch.no_grad():
        torch.testing.assert_close(loaded(past_values=past).prediction_outputs, model(past_values=past).prediction_outputs,
                                   rtol=0, atol=0)
    assert hf_plugins.HybridPatchTSMixerConfig is HybridPatchTSMixerConfig


@pytest.mark.parametrize(
    "kwargs, field",
    [
        (dict(mode="channel"), "mode"),
        (dict(reconciliation_context=-1), "reconciliation_context"),
        (dict(hierarchy_patch_length=99), "hierarchy_patch_length"),
        (dict(prediction_channel_indices=[0, 7]), "prediction_channel_indices"),
        (dict(use_hierarchy_head=True, loss="nll"), "loss"),
        (dict(hierarchy_consistency_loss_weight=-1.0), "hierarchy_consistency_loss_weight"),
        (dict(hierarchy_consistency="aggregate"), "hierarchy_consistency"),
        (dict(patch_length=64), "patch_length"),
    ],
)
def test_config_validation_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        small(**kwargs)


def test_recipe_etth1_tiny_with_exogenous_channels_and_pretraining(tmp_path, data_dir):
    from hf_plugins.recipes import run_recipe

    out = run_recipe(
        "patchtsmixer-etth1",
        ["--tiny", "--max-steps", "4", "--features", "MS", "--heads", "both", "--pretrain-steps", "2",
         "--pretrain-learning-rate", "3e-3", "--data-dir", str(data_dir), "--output-dir", str(tmp_path / "run")],
    )
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train"]["train_loss"] > 0
    assert metrics["args"]["pretrain_learning_rate"] == 3e-3 and metrics["args"]["pretrained"]
    test = metrics["test"]
    assert test["test_mse"] > 0 and test["naive_last_value_mse"] > 0
    model = HybridPatchTSMixerForPrediction.from_pretrained(out)
    assert model.config.prediction_channel_indices == [6]  # OT forecast, the other six are inputs
    assert model.config.use_cross_channel_head and model.config.use_hierarchy_head
    assert (tmp_path / "run" / "forecast_vs_truth.png").is_file()
    card = (tmp_path / "run" / "README.md").read_text()
    assert "ekambaram2023tsmixer" in card and "forecast_vs_truth.png" in card


def test_pretrain_recipe_backbone_loads_into_the_forecasting_recipe(tmp_path, data_dir):
    from safetensors.torch import load_file

    from hf_plugins.recipes import run_recipe
    from hf_plugins.recipes.patchtsmixer import load_pretrained_backbone

    backbone = tmp_path / "backbone"
    run_recipe("patchtsmixer-etth1-pretrain", ["--tiny", "--max-steps", "3", "--mask-ratio", "0.5", "--data-dir",
                                               str(data_dir), "--output-dir", str(backbone)])
    saved = json.loads((backbone / "config.json").read_text())
    assert saved["architectures"] == ["HybridPatchTSMixerForPretraining"] and saved["random_mask_ratio"] == 0.5
    assert json.loads((backbone / "metrics.json").read_text())["test"]["test_loss"] > 0
    card = (backbone / "README.md").read_text()
    assert "pretrained by masked patch reconstruction" in card and "--pretrained-backbone" in card

    # the backbone's weights, exactly, in a forecaster with both heads; the heads keep their own
    forecaster = HybridPatchTSMixerForPrediction.from_pretrained(backbone, prediction_length=16,
                                                                 use_cross_channel_head=True, use_hierarchy_head=True)
    torch.manual_seed(1)
    fresh = HybridPatchTSMixerForPrediction(forecaster.config)
    info = load_pretrained_backbone(fresh, backbone)
    assert info["steps"] == 3 and info["mask_ratio"] == 0.5 and info["recipe"] == "patchtsmixer-etth1-pretrain"
    weights = load_file(backbone / "model.safetensors")
    for name, value in fresh.model.state_dict().items():
        torch.testing.assert_close(value, weights["model." + name], rtol=0, atol=0)
    assert not torch.count_nonzero(fresh.cross_channel_head.projection.weight)  # still zero-initialised

    out = run_recipe("patchtsmixer-etth1", ["--tiny", "--max-steps", "2", "--pretrained-backbone", str(backbone),
                                            "--linear-probe-steps", "1",
                                            "--data-dir", str(data_dir), "--output-dir", str(tmp_path / "run")])
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["args"]["backbone_pretraining"]["steps"] == 3 and metrics["args"]["pretrained"]
    card = (tmp_path / "run" / "README.md").read_text()
    assert "loaded from a pretrained checkpoint" in card and "1 step of linear probing" in card
    assert HybridPatchTSMixerForPrediction.from_pretrained(out).config.use_hierarchy_head

    with pytest.raises(ValueError, match="--linear-probe-steps"):
        run_recipe("patchtsmixer-etth1", ["--tiny", "--max-steps", "2", "--linear-probe-steps", "2",
                                          "--data-dir", str(data_dir), "--output-dir", str(tmp_path / "bad")])
    with pytest.raises(ValueError, match="--pretrain-steps and --pretrained-backbone"):
        run_recipe("patchtsmixer-etth1", ["--tiny", "--pretrain-steps", "2", "--pretrained-backbone", str(backbone),
                                          "--data-dir", str(data_dir), "--output-dir", str(tmp_path / "bad")])
    assert not (tmp_path / "bad").exists()
    other = HybridPatchTSMixerForPrediction(HybridPatchTSMixerConfig(**{**forecaster.config.to_dict(), "d_model": 4}))
    with pytest.raises(ValueError, match="d_model is 8 there and 4 here"):
        load_pretrained_backbone(other, backbone)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_pretrained_backbone(fresh, tmp_path / "nowhere")


@pytest.mark.parametrize("probe_steps", [3, 1])
def test_linear_probe_steps_freeze_the_backbone_only_while_they_last(probe_steps, tmp_path):
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from hf_plugins.recipes.patchtsmixer import LinearProbeCallback

    torch.manual_seed(0)
    config = small(use_cross_channel_head=True, use_hierarchy_head=True, dropout=0.0)
    model = HybridPatchTSMixerForPrediction(config)
    past, future = batch(config, n=16)
    data = [{"past_values": p, "future_values": f} for p, f in zip(past, future)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    args = TrainingArguments(output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=8, learning_rate=1e-2,
                             report_to=[], save_strategy="no", use_cpu=True, remove_unused_columns=False)
    backbone_grads = []  # per optimizer step (after clipping): did the backbone get a gradient at all?

    class Record(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            backbone_grads.append(any(p.grad is not None for p in model.model.parameters()))

    callbacks = [Record(), LinearProbeCallback(probe_steps)]  # Record runs first
    Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks).train()
    # frozen while probing: no backbone gradient is computed, so clipping sees the heads' alone
    assert backbone_grads == [False] * probe_steps + [True] * (3 - probe_steps)
    assert all(p.requires_grad for p in model.parameters())  # unfrozen when training ends
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    backbone = {k for k in changed if k.startswith("model.")}
    assert {k for k in changed if k.startswith("head.")} and {k for k in changed if k.startswith("hierarchy_head.")}
    assert bool(backbone) == (probe_steps < 3)  # frozen for all three steps, or trained after the first


def test_dropout_keeps_a_bool_mask_with_the_same_statistics():
    from hf_plugins.modeling.hybrid_patchtsmixer import MaskDropout

    model = HybridPatchTSMixerForPrediction(small(dropout=0.3, use_cross_channel_head=True, use_hierarchy_head=True))
    assert not [m for m in model.modules() if type(m) is torch.nn.Dropout]
    drop = MaskDropout(0.25).train()
    x = torch.ones(200_000, requires_grad=True)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = drop(x)
    assert [t.dtype for t in saved] == [torch.bool]
    assert abs((y == 0).float().mean().item() - 0.25) < 0.01
    assert torch.allclose(y[y != 0], torch.tensor(1 / 0.75))
    y.sum().backward()
    assert torch.equal(x.grad, y.detach())  # gradient flows through the kept entries only, same scale
    assert torch.equal(drop.eval()(x), x)
    assert torch.equal(MaskDropout(1.0).train()(x), torch.zeros_like(x))
