"""peft knows S2FT in a fresh process after `import hf_plugins`, and a saved S2FT adapter loads there."""

import json
import subprocess
import sys
import textwrap

import torch

BUILD = """
import torch
from transformers import LlamaConfig, LlamaForCausalLM
torch.manual_seed(0)
base = LlamaForCausalLM(LlamaConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                    intermediate_size=48, vocab_size=97, max_position_embeddings=64)).eval()
ids = torch.arange(24).reshape(2, 12) % 97
"""


def run_fresh(code: str) -> str:
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_peft_knows_s2ft_and_a_saved_adapter_loads_in_a_fresh_process(tmp_path):
    base_dir, adapter_dir, out_file = tmp_path / "base", tmp_path / "adapter", tmp_path / "logits.pt"
    out = run_fresh(
        BUILD
        + f"""
import json
import hf_plugins
import peft
from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING, PEFT_TYPE_TO_PREFIX_MAPPING, PEFT_TYPE_TO_TUNER_MAPPING
t = peft.PeftType.S2FT
print(json.dumps([t.value, peft.PeftType("S2FT") is t, PEFT_TYPE_TO_CONFIG_MAPPING[t].__name__,
                  PEFT_TYPE_TO_TUNER_MAPPING[t].__name__, PEFT_TYPE_TO_PREFIX_MAPPING[t]]))
from peft import get_peft_model
from hf_plugins import S2FTConfig
base.save_pretrained({str(base_dir)!r})
model = get_peft_model(base, S2FTConfig(target_components=["v", "o", "down"], ratio=0.5, init_weights=False))
model.save_pretrained({str(adapter_dir)!r})
torch.save(model(ids).logits, {str(out_file)!r})
"""
    )
    # `import hf_plugins; import peft` knows the peft type, its config, tuner and prefix
    assert json.loads(out.strip().splitlines()[-1]) == ["S2FT", True, "S2FTConfig", "S2FTModel", "s2ft_"]
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    assert config["peft_type"] == "S2FT" and config["selection"]
    loaded_file = tmp_path / "loaded.pt"
    run_fresh(
        f"""
import torch
import hf_plugins
from peft import PeftModel
from transformers import AutoModelForCausalLM
base = AutoModelForCausalLM.from_pretrained({str(base_dir)!r}).eval()
model = PeftModel.from_pretrained(base, {str(adapter_dir)!r})
assert type(model.peft_config["default"]).__name__ == "S2FTConfig"
ids = torch.arange(24).reshape(2, 12) % 97
torch.save(model(ids).logits, {str(loaded_file)!r})
"""
    )
    torch.testing.assert_close(torch.load(loaded_file), torch.load(out_file), rtol=0, atol=0)
