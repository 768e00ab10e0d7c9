"""Registration: built-in plugins, third-party entry points, laziness, idempotence, exports."""

import json
import subprocess
import sys
import textwrap

import pytest

import hf_plugins
from hf_plugins.registry import PluginSpec, register_all


def run_python(code: str, **env_extra) -> str:
    import os

    env = {**os.environ, **env_extra}
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_import_is_lazy_and_idempotent():
    out = run_python(
        """
        import sys, json
        import hf_plugins
        first = dict(hf_plugins.registered_plugins())
        import hf_plugins as again
        again.register_all()
        from transformers import CONFIG_MAPPING
        print(json.dumps({
            "peft": "peft" in sys.modules,
            "modeling": sorted(m for m in sys.modules if m.startswith("hf_plugins.modeling.")),
            "same": list(first) == list(again.registered_plugins()),
            "models": [n for n, s in first.items() if s.kind == "model"],
            "in_config_mapping": all(n in CONFIG_MAPPING for n, s in first.items() if s.kind == "model"),
        }))
        """
    )
    state = json.loads(out.strip().splitlines()[-1])
    assert state["peft"] is False, "import hf_plugins must not import peft"
    assert state["modeling"] == [], f"modeling code imported eagerly: {state['modeling']}"
    assert state["same"]
    assert state["in_config_mapping"]


def test_every_export_resolves():
    for name in dir(hf_plugins):
        if name.startswith("_"):
            continue
        assert getattr(hf_plugins, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'NotAThing'"):
        hf_plugins.NotAThing


def test_builtin_models_resolve_through_auto_classes():
    import transformers
    from transformers import AutoConfig

    for spec in hf_plugins.registered_plugins().values():
        if spec.kind != "model":
            continue
        config = AutoConfig.for_model(spec.name)
        assert config.model_type == spec.name
        for auto_name, path in spec.auto.items():
            auto_cls = getattr(transformers, auto_name)
            model_cls = auto_cls._model_mapping[type(config)]
            assert f"{model_cls.__module__}:{model_cls.__name__}" == path


def test_peft_methods_join_peft_in_a_fresh_process():
    out = run_python(
        """
        import hf_plugins, json, importlib.util
        importlib.util.find_spec("peft")  # a probe (as transformers does) must not disarm the hook
        import peft
        from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
        names = [n for n, s in hf_plugins.registered_plugins().items() if s.kind == "peft"]
        print(json.dumps({n: [n.upper() in peft.PeftType.__members__,
                              peft.PeftType(n.upper()) in PEFT_TYPE_TO_CONFIG_MAPPING,
                              peft.PeftType(n.upper()) in PEFT_TYPE_TO_TUNER_MAPPING] for n in names}))
        """
    )
    for name, flags in json.loads(out.strip().splitlines()[-1]).items():
        assert flags == [True, True, True], name


TINY_PLUGIN = '''
import torch
from transformers import PretrainedConfig, PreTrainedModel


class TinyPlugConfig(PretrainedConfig):
    model_type = "tiny_plug"

    def __init__(self, width=4, **kwargs):
        self.width = width
        super().__init__(**kwargs)


class TinyPlugModel(PreTrainedModel):
    config_class = TinyPlugConfig

    def __init__(self, config):
        super().__init__(config)
        self.proj = torch.nn.Linear(config.width, config.width)
        self.post_init()

    def forward(self, x):
        return self.proj(x)


def plugins():
    return [{"name": "tiny_plug", "config": "tinyplug:TinyPlugConfig",
             "auto": {"AutoModel": "tinyplug:TinyPlugModel"},
             "exports": {"TinyPlugModel": "tinyplug"}}]
'''


def test_third_party_plugin_through_entry_point(tmp_path):
    """A real distribution (dist-info with an entry point) on sys.path joins after `import hf_plugins`."""
    (tmp_path / "tinyplug").mkdir()
    (tmp_path / "tinyplug" / "__init__.py").write_text(TINY_PLUGIN)
    info = tmp_path / "tinyplug-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinyplug\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[hf_plugins]\ntiny = tinyplug:plugins\n")
    (info / "RECORD").write_text("")
    import os

    pythonpath = os.pathsep.join([str(tmp_path), os.environ.get("PYTHONPATH", "")])
    out = run_python(
        """
        import hf_plugins, json
        from transformers import AutoConfig, AutoModel
        config = AutoConfig.for_model("tiny_plug", width=3)
        model = AutoModel.from_config(config)
        spec = hf_plugins.registered_plugins()["tiny_plug"]
        print(json.dumps([type(model).__name__, model.proj.in_features, spec.distribution,
                          hf_plugins.TinyPlugModel is type(model)]))
        """,
        PYTHONPATH=pythonpath,
    )
    assert json.loads(out.strip().splitlines()[-1]) == ["TinyPlugModel", 3, "tinyplug", True]
    listing = subprocess.run(
        [sys.executable, "-m", "hf_plugins.cli", "list"], capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": pythonpath},
    )
    assert listing.returncode == 0, listing.stderr
    row = next(line for line in listing.stdout.splitlines() if line.startswith("tiny_plug"))
    assert "AutoModel" in row and "tinyplug" in row


def test_bad_specs_are_refused():
    with pytest.raises(ValueError, match="kind must be"):
        PluginSpec(name="x", kind="dataset", config=object)
    with pytest.raises(ValueError, match="lower-case name"):
        PluginSpec(name="X", kind="peft", config="a:b", peft_model="a:c")
    assert register_all() == hf_plugins.registered_plugins()
