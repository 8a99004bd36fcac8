"""One spec per method and per regularizer: the single place that knows a method's facts.

A spec holds what export, convert, the model card, the config and the CLI need to know: the title, the papers,
the authors' code, the default config and (for a regularizer) its config section and its validation. Bases
(``mocov2``, ``mocov3``) register with :func:`register_method`, presets (``co2`` = MoCo v2 + CO2) with
:func:`register_preset`, regularizers with :func:`register_regularizer`. Adding a regularizer is its loss file
plus its registration: its config section appears under ``method.<name>`` by itself (:func:`method_config_class`).

This module holds data only: it imports the config schema and nothing that registers (no cycle).
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Callable
from dataclasses import dataclass, field, make_dataclass
from typing import Any

from .config import ConfigError, MethodConfig


@dataclass(frozen=True)
class Facts:
    """What a model card and an export say about a method or a regularizer."""

    title: str  # "MoCo v2"
    papers: tuple[str, ...] = ()  # "arXiv:2003.04297"
    code: str | None = None  # the authors' code


@dataclass
class MethodSpec:
    """A base (``builder`` set, full defaults) or a preset (``base`` + ``regularizers`` + what it changes)."""

    name: str
    facts: Facts
    defaults: dict[str, dict[str, Any]]  # nested over the Config sections (method, aug, train...)
    builder: Callable | None = None  # (backbone, MethodConfig) -> nn.Module, for a base
    description: str = ""

    @property
    def is_base(self) -> bool:
        return self.builder is not None

    @property
    def base(self) -> str:
        return self.name if self.is_base else self.defaults["method"]["base"]


@dataclass
class RegularizerSpec:
    """A loss term that wraps any base: its module class, its config section and its checks."""

    name: str
    facts: Facts
    module: type  # constructed as module(base, cfg): a xmoco_zoo.regularizers.Regularizer
    config: type  # the dataclass of method.<name>
    validate: Callable[[MethodConfig], None] | None = None  # raises ConfigError
    description: str = ""


_METHODS: dict[str, MethodSpec] = {}
_REGULARIZERS: dict[str, RegularizerSpec] = {}
_REFERENCES: dict[str, Facts] = {}  # methods we only convert (official MoCo v1 weights)
_SCHEMA: dict[tuple[str, ...], type] = {}


def register_method(
    name: str, facts: Facts, defaults: dict[str, dict[str, Any]], description: str = ""
) -> Callable:
    """Decorator registering a base's builder ``(backbone, MethodConfig) -> nn.Module`` under ``name``."""

    def wrap(builder: Callable) -> Callable:
        _check_new(name)
        merged = {**defaults, "method": {**defaults.get("method", {}), "name": name, "base": name}}
        _METHODS[name] = MethodSpec(name, facts, merged, builder, description)
        return builder

    return wrap


def register_preset(
    name: str,
    base: str,
    regularizers: list[str],
    facts: Facts | None = None,
    defaults: dict | None = None,
    description: str = "",
) -> None:
    """Register ``name`` as ``base`` + ``regularizers`` (+ any other defaults it changes). Its facts default to
    its single regularizer's."""
    _check_new(name)
    defaults = copy.deepcopy(defaults or {})
    defaults["method"] = {
        **defaults.get("method", {}),
        "name": name,
        "base": base,
        "regularizers": list(regularizers),
    }
    if facts is None:
        facts = _REGULARIZERS[regularizers[0]].facts
    _METHODS[name] = MethodSpec(name, facts, defaults, None, description)


def register_regularizer(
    name: str,
    facts: Facts,
    config: type,
    validate: Callable[[MethodConfig], None] | None = None,
    description: str = "",
) -> Callable[[type], type]:
    """Class decorator registering a regularizer module and its config section ``method.<name>``."""

    def wrap(module: type) -> type:
        if name in _REGULARIZERS:
            raise ValueError(f"regularizer {name!r} is already registered")
        _REGULARIZERS[name] = RegularizerSpec(name, facts, module, config, validate, description)
        return module

    return wrap


def unregister_regularizer(name: str) -> None:
    """Remove a regularizer (tests that register a toy one clean up with this)."""
    _REGULARIZERS.pop(name, None)


def register_reference(name: str, facts: Facts) -> None:
    """Facts about a method this project converts but does not train (MoCo v1)."""
    _REFERENCES[name] = facts


def _check_new(name: str) -> None:
    if name in _METHODS:
        raise ValueError(f"method {name!r} is already registered")


def list_methods() -> list[str]:
    return sorted(_METHODS)


def list_regularizers() -> list[str]:
    return sorted(_REGULARIZERS)


def list_bases() -> list[str]:
    return sorted(n for n, s in _METHODS.items() if s.is_base)


def get_method_spec(name: str) -> MethodSpec:
    if name not in _METHODS:
        close = difflib.get_close_matches(name, _METHODS, n=1)
        names = ", ".join(list_methods())
        fix = f"did you mean {close[0]!r}? (registered: {names})" if close else f"use one of {names}"
        raise ConfigError(f"unknown method {name!r} — {fix}")
    return _METHODS[name]


def get_regularizer_spec(name: str) -> RegularizerSpec:
    return _REGULARIZERS[name]


def facts(name: str) -> Facts:
    """The facts of a method, a regularizer or a converted-only reference, by name."""
    for table in (_METHODS, _REGULARIZERS):
        if name in table:
            return table[name].facts
    if name in _REFERENCES:
        return _REFERENCES[name]
    return Facts(title=name)


def paper_ids(method: MethodConfig) -> list[str]:
    """The papers behind a method: its base's, then each regularizer's."""
    return [p for n in [method.base, *sorted(method.regularizers)] for p in facts(n).papers]


def method_config_class() -> type:
    """The MethodConfig schema with one section per registered regularizer (``method.co2``...)."""
    key = tuple(sorted(_REGULARIZERS))
    if key not in _SCHEMA:
        sections = [(n, _REGULARIZERS[n].config, field(default_factory=_REGULARIZERS[n].config)) for n in key]
        _SCHEMA[key] = make_dataclass("MethodConfig", sections, bases=(MethodConfig,))
    return _SCHEMA[key]


def method_config(**values: Any) -> MethodConfig:
    """A MethodConfig with every registered regularizer's section, e.g. ``method_config(regularizers=["co2"])``."""
    return method_config_class()(**values)


def method_layers(name: str, base: str | None = None) -> list[dict[str, dict[str, Any]]]:
    """The default layers of method ``name``, with an optional explicit ``base`` (``method.base=mocov3``).

    The base's defaults come first; a preset's changes follow (but not its base when another is set). A composed
    name (``mocov3+co2``) resolves to its base and regularizers.
    """
    if "+" in name:
        first, *regs = name.split("+")
        layers = method_layers(first, base)
        layers.append({"method": {"regularizers": regs}})
        return layers
    spec = get_method_spec(name)
    base = base or spec.base
    layers = [copy.deepcopy(get_method_spec(base).defaults)]
    if not spec.is_base:
        preset = copy.deepcopy(spec.defaults)
        preset["method"].pop("base")
        layers.append(preset)
    return layers


def preset_for(base: str, regularizers: list[str]) -> str | None:
    """The registered preset that is exactly ``base`` + ``regularizers``, if any (the base for none)."""
    if not regularizers:
        return base
    for s in _METHODS.values():
        if (
            not s.is_base
            and s.base == base
            and sorted(s.defaults["method"]["regularizers"]) == sorted(regularizers)
        ):
            return s.name
    return None


def validate_method(m: MethodConfig) -> None:
    """Check a method config and set its canonical ``name``; every way of building a method calls this."""
    if m.base not in list_bases():
        raise ConfigError(f"method.base={m.base!r} is not one of {list_bases()}")
    for r in m.regularizers:
        if r not in _REGULARIZERS:
            close = difflib.get_close_matches(r, _REGULARIZERS, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(
                f"method.regularizers: unknown regularizer {r!r}{hint} Available: {list_regularizers()}"
            )
    if len(set(m.regularizers)) != len(m.regularizers):
        raise ConfigError(f"method.regularizers lists a regularizer twice: {m.regularizers}")
    for r in m.regularizers:
        check = _REGULARIZERS[r].validate
        if check is not None:
            check(m)
    if m.negatives_topk is not None and (m.base != "mocov2" or m.negatives_topk < 1):
        raise ConfigError(
            f"method.negatives_topk={m.negatives_topk} (base {m.base}): it keeps the k >= 1 hardest negatives of "
            "MoCo v2's queue; MoCo v3 has no queue, so leave it unset (null) there"
        )
    regs = sorted(m.regularizers)
    m.name = preset_for(m.base, regs) or "+".join([m.base, *regs])


# MoCo v1: converted from its official weights (xmoco_zoo.convert), not trained here.
register_reference(
    "mocov1", Facts("MoCo v1", ("arXiv:1911.05722",), "https://github.com/facebookresearch/moco")
)


def method_defaults(name: str) -> dict[str, dict[str, Any]]:
    """A method's full defaults: its base's, then (for a preset) what the preset changes."""
    out: dict[str, dict[str, Any]] = {}
    for layer in method_layers(name):
        for section, values in layer.items():
            out.setdefault(section, {}).update(copy.deepcopy(values))
    return out
