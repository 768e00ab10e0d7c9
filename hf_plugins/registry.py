"""Registration of every plugin with transformers' Auto classes and with peft.

A plugin is described by a :class:`PluginSpec`. hf-plugins finds its own specs in the modules of
``hf_plugins.configuration`` (one per paper, each defining ``PLUGIN``) and in the sub-packages of
``hf_plugins.peft_methods`` (each ``__init__`` defining ``PLUGIN``); other distributions join through the
entry-point group ``hf_plugins``, whose entries name a function returning an iterable of specs.

Registration is cheap and idempotent:

* configs go to ``AutoConfig`` at once (a config module imports no torch of its own);
* model classes are registered as ``"module:Class"`` strings and imported the first time an Auto class
  asks for them, so ``import hf_plugins`` does not import any modeling code;
* peft methods are registered when ``peft`` itself is imported (peft costs seconds to import), or at
  once if it already is. Their names are added to ``peft.PeftType``, which refuses unknown names.
"""

from __future__ import annotations

import enum
import importlib
import importlib.abc
import importlib.metadata
import importlib.util
import logging
import pkgutil
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping

logger = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "hf_plugins"
OWN_DISTRIBUTION = "hf-plugins"


@dataclass(frozen=True)
class PluginSpec:
    """What one plugin registers.

    Args:
        name: the ``model_type`` of a model plugin, or the lower-case peft method name (``"s2ft"``).
        kind: ``"model"`` or ``"peft"``.
        config: the config class, or ``"module:Class"``.
        auto: for models, Auto class name (``"AutoModelForCausalLM"``) -> ``"module:Class"``.
        peft_model: for peft methods, the tuner class (``"module:Class"``).
        prefix: for peft methods, the parameter-name prefix (default ``name + "_"``).
        exports: public name -> module path, exported lazily from the top of ``hf_plugins``.
        distribution: filled in by the registry (the distribution that provided the spec).
    """

    name: str
    kind: str = "model"
    config: Any = None
    auto: Mapping[str, str] = field(default_factory=dict)
    peft_model: str | None = None
    prefix: str | None = None
    exports: Mapping[str, str] = field(default_factory=dict)
    distribution: str = OWN_DISTRIBUTION

    def __post_init__(self):
        if self.kind not in ("model", "peft"):
            raise ValueError(f"PluginSpec.kind must be 'model' or 'peft', got {self.kind!r} (plugin {self.name!r})")
        if self.config is None:
            raise ValueError(f"PluginSpec {self.name!r} has no config class")
        if self.kind == "peft" and (not self.name.islower() or self.peft_model is None):
            raise ValueError(f"peft plugin {self.name!r} needs a lower-case name and a peft_model class path")


_lock = threading.RLock()
_specs: dict[str, PluginSpec] = {}
_registered = False
_peft_registered: set[str] = set()


def import_object(path: str | type) -> Any:
    """Resolve ``"package.module:Name"`` to the object (classes pass through)."""
    if not isinstance(path, str):
        return path
    module_name, _, attr = path.partition(":")
    if not attr:
        raise ValueError(f"expected 'module:Name', got {path!r}")
    return getattr(importlib.import_module(module_name), attr)


def register_all() -> dict[str, PluginSpec]:
    """Register every built-in and entry-point plugin once; later calls return the same registry."""
    global _registered
    with _lock:
        if _registered:
            return dict(_specs)
        for spec in _builtin_specs():
            _add(spec)
        for spec in _entry_point_specs():
            _add(spec)
        _registered = True
        _hook_peft()
        return dict(_specs)


def registered_plugins() -> dict[str, PluginSpec]:
    """Name -> spec of everything registered (registering first if needed)."""
    return register_all()


def register_plugin(spec: PluginSpec) -> None:
    """Register one spec by hand (what an entry point does, for code that cannot declare one)."""
    with _lock:
        _add(spec)
        _hook_peft()


def public_exports() -> dict[str, str]:
    """Public name -> module path, for ``hf_plugins.__getattr__``."""
    exports: dict[str, str] = {}
    for spec in register_all().values():
        exports.update(spec.exports)
    return exports


# -- helpers -------------------------------------------------------------------------------------------


def _add(spec: PluginSpec) -> None:
    if spec.name in _specs:
        known = _specs[spec.name]
        if known.distribution != spec.distribution:
            logger.warning(
                "plugin %r from %s ignored: already registered by %s", spec.name, spec.distribution, known.distribution
            )
        return
    if spec.kind == "model":
        _register_model(spec)
    _specs[spec.name] = spec


def _register_model(spec: PluginSpec) -> None:
    import transformers
    from transformers import AutoConfig

    config_cls = import_object(spec.config)
    if getattr(config_cls, "model_type", None) != spec.name:
        raise ValueError(
            f"plugin {spec.name!r}: config class {config_cls.__name__} has model_type "
            f"{getattr(config_cls, 'model_type', None)!r}, expected {spec.name!r}"
        )
    AutoConfig.register(spec.name, config_cls, exist_ok=True)
    for auto_name, model_path in spec.auto.items():
        auto_cls = getattr(transformers, auto_name, None)
        if auto_cls is None or not hasattr(auto_cls, "_model_mapping"):
            raise ValueError(f"plugin {spec.name!r}: {auto_name!r} is not an Auto model class of transformers")
        mapping = auto_cls._model_mapping
        # transformers' _LazyAutoMapping keeps registered classes in a plain dict; a dict that resolves
        # "module:Class" strings on first read keeps modeling code out of `import hf_plugins`.
        if not isinstance(mapping._extra_content, _LazyClassDict):
            mapping._extra_content = _LazyClassDict(mapping._extra_content)
        mapping._extra_content[config_cls] = model_path


class _LazyClassDict(dict):
    """A dict whose ``"module:Class"`` string values are imported on first read."""

    def __getitem__(self, key):
        value = super().__getitem__(key)
        if isinstance(value, str):
            value = import_object(value)
            super().__setitem__(key, value)
        return value

    def get(self, key, default=None):
        return self[key] if key in self else default

    def values(self):
        return [self[k] for k in self]

    def items(self):
        return [(k, self[k]) for k in self]


def _builtin_specs() -> Iterable[PluginSpec]:
    from . import configuration, peft_methods

    for info in sorted(pkgutil.iter_modules(configuration.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{configuration.__name__}.{info.name}")
        yield from _as_specs(getattr(module, "PLUGIN", None), OWN_DISTRIBUTION)
    for info in sorted(pkgutil.iter_modules(peft_methods.__path__), key=lambda m: m.name):
        if info.ispkg:
            module = importlib.import_module(f"{peft_methods.__name__}.{info.name}")
            yield from _as_specs(getattr(module, "PLUGIN", None), OWN_DISTRIBUTION)


def _entry_point_specs() -> Iterable[PluginSpec]:
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        dist = ep.dist.name if ep.dist is not None else ep.value
        try:
            factory: Callable[[], Any] = ep.load()
            specs = list(_as_specs(factory(), dist))
        except Exception as exc:  # a broken third-party plugin must not break the library
            logger.warning("hf_plugins entry point %r from %s failed to load: %s", ep.name, dist, exc)
            continue
        yield from specs


def _as_specs(obj: Any, distribution: str) -> Iterable[PluginSpec]:
    if obj is None:
        return
    items = obj if isinstance(obj, (list, tuple)) else [obj]
    for item in items:
        if isinstance(item, Mapping):
            item = PluginSpec(**item)
        if not isinstance(item, PluginSpec):
            raise TypeError(f"expected PluginSpec or dict from {distribution}, got {type(item).__name__}")
        if item.distribution != distribution:
            item = PluginSpec(**{**item.__dict__, "distribution": distribution})
        yield item


# -- peft ----------------------------------------------------------------------------------------------


def _hook_peft() -> None:
    """Register peft methods now if peft is imported, else right after its import."""
    if not any(s.kind == "peft" for s in _specs.values()):
        return
    if "peft" in sys.modules and hasattr(sys.modules["peft"], "PeftType"):
        _register_peft_methods()
    elif not any(isinstance(f, _PeftImportHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _PeftImportHook())


def register_peft_methods() -> None:
    """Register every peft plugin with peft (peft must be imported; safe to call any number of times).

    Each method's name is added to ``peft.PeftType`` at once. Its classes are registered as soon as they
    can be imported; a method whose module is itself still being imported (its ``import peft`` is what
    triggered this) is skipped quietly, and each module of the method calls this function on its last line.
    """
    from peft.mapping import PEFT_TYPE_TO_CONFIG_MAPPING
    from peft.utils import register_peft_method
    from peft.utils.peft_types import PeftType

    with _lock:
        pending = [s for s in _specs.values() if s.kind == "peft" and s.name not in _peft_registered]
        for spec in pending:
            _extend_enum(PeftType, spec.name.upper())
        for spec in pending:
            try:
                config_cls, model_cls = import_object(spec.config), import_object(spec.peft_model)
            except Exception as exc:  # one broken method must not take the others down with it
                if not (_initializing(spec.config) or _initializing(spec.peft_model)):
                    logger.warning("peft method %r from %s could not be imported: %s", spec.name, spec.distribution, exc)
                continue
            if PeftType[spec.name.upper()] not in PEFT_TYPE_TO_CONFIG_MAPPING:
                register_peft_method(name=spec.name, config_cls=config_cls, model_cls=model_cls, prefix=spec.prefix)
            _peft_registered.add(spec.name)


_register_peft_methods = register_peft_methods


def _initializing(path) -> bool:
    """Whether a module of the package of ``"package.module:Class"`` is in the middle of its own import."""
    if not isinstance(path, str):
        return False
    package = path.partition(":")[0].rpartition(".")[0]
    return any(
        (name == package or name.startswith(package + "."))
        and bool(getattr(getattr(module, "__spec__", None), "_initializing", False))
        for name, module in list(sys.modules.items())
    )


def _extend_enum(enum_cls: type[enum.Enum], name: str) -> None:
    """Add ``name`` (value == name) to a ``str`` Enum such as ``peft.PeftType``, once."""
    if name in enum_cls.__members__:
        return
    member = str.__new__(enum_cls, name)
    member._name_ = name
    member._value_ = name
    member.__objclass__ = enum_cls
    member._sort_order_ = len(enum_cls._member_names_)
    enum_cls._member_map_[name] = member
    enum_cls._value2member_map_[name] = member
    enum_cls._member_names_.append(name)
    type.__setattr__(enum_cls, name, member)


class _PeftImportHook(importlib.abc.MetaPathFinder):
    """Runs the peft registration right after ``import peft`` finishes.

    ``find_spec`` is also called by mere probes (``importlib.util.find_spec("peft")`` in transformers'
    availability checks), so the hook stays on ``sys.meta_path`` until peft is actually executed.
    """

    def find_spec(self, fullname, path, target=None):
        if fullname != "peft":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and not isinstance(spec.loader, _RegisterAfter):
                    spec.loader = _RegisterAfter(spec.loader)
                return spec
        return None


class _RegisterAfter(importlib.abc.Loader):
    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self._loader
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _PeftImportHook)]
        _register_peft_methods()
