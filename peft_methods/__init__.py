"""peft methods, one sub-package each (config.py, layer.py, model.py), registered with peft by hf_plugins.registry."""
