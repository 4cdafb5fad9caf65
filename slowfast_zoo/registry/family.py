"""Model families: one registration maps a family name to its config dataclass and the builder of its network.

As timm's ``build_model_with_cfg``: :func:`slowfast_zoo.create`, ``expected_state_dict``, ``config.json``
(``pretrained_cfg.family``) and its schema know a network only through its :class:`Family`. ResNet3d (every
SlowFast, Slow-only, C2D and I3D model of the zoo) is the family ``resnet3d``, the default of a config.json that
names none.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..models.resnet3d import ResNet3d, ResNet3dConfig, ResNet3dFeatures

__all__ = ["DEFAULT_FAMILY", "Family", "config_error", "family_of", "get_family", "list_families", "register_family"]

#: the family of a config.json without a ``family`` field (every config written before families existed)
DEFAULT_FAMILY = "resnet3d"


@dataclass(frozen=True)
class Family:
    """What the zoo needs to know of one kind of network."""

    name: str
    #: a frozen dataclass of the architecture's arguments, with at least ``num_classes`` and ``num_frames`` fields
    config_cls: type
    #: config -> module, built on torch's current default device (``create`` builds on ``meta``, then materializes)
    builder: Callable[[Any], nn.Module]
    #: ``(model, out_indices)`` -> a module returning feature maps, for ``create(features_only=True)``; the model is
    #: one the builder made (typed ``Any`` as the builder's config is: each family takes its own class)
    features: Callable[[Any, tuple[int, ...]], nn.Module] | None = None
    #: checks of a config.json's ``model`` object that its field types cannot say (raise ValueError naming the field)
    check: Callable[[Mapping[str, Any]], None] | None = None

    def __post_init__(self) -> None:
        if not dataclasses.is_dataclass(self.config_cls):
            raise TypeError(f"family {self.name!r}: config_cls must be a dataclass, got {self.config_cls!r}")
        names = {f.name for f in dataclasses.fields(self.config_cls)}
        missing = sorted({"num_classes", "num_frames"} - names)
        if missing:
            raise TypeError(f"family {self.name!r}: {self.config_cls.__name__} lacks the field(s) {missing}")


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> Family:
    """Make ``family`` known by its name and by its config class (one family per config class)."""
    if family.name in _FAMILIES:
        raise ValueError(f"model family {family.name!r} is already registered")
    taken = [f.name for f in _FAMILIES.values() if f.config_cls is family.config_cls]
    if taken:
        raise ValueError(f"{family.config_cls.__name__} is already the config class of family {taken[0]!r}")
    _FAMILIES[family.name] = family
    return family


def list_families() -> list[str]:
    """Names of the registered model families."""
    return sorted(_FAMILIES)


def get_family(name: str) -> Family:
    """The family registered under ``name``; ValueError listing the known ones."""
    family = _FAMILIES.get(name) if isinstance(name, str) else None
    if family is None:
        raise ValueError(f"unknown model family {name!r}; known: {list_families()}")
    return family


def family_of(config: Any) -> Family:
    """The family whose config class ``config`` is an instance of."""
    for family in _FAMILIES.values():
        if type(config) is family.config_cls:
            return family
    raise ValueError(f"{type(config).__name__} is the config class of no registered model family")


def config_error(field: str, expected: str, value: Any) -> ValueError:
    """The error of a config.json field that is not as expected (what was expected, what came, shortened)."""
    shown = repr(value)
    return ValueError(
        f"config field {field!r}: expected {expected}, got {shown[:80]}{'...' if len(shown) > 80 else ''}"
    )


def _check_resnet3d(m: Mapping[str, Any], p: str = "pretrained_cfg.model.") -> None:
    """ResNet3d: lengths that follow other fields (one entry per pathway, one per block of each stage), indices."""
    layers = m.get("layers", [3, 4, 6, 3])
    pathways = 1 if m.get("alpha") is None else 2
    if "stem_kernel_t" in m and len(m["stem_kernel_t"]) != pathways:
        raise config_error(p + "stem_kernel_t", f"a list of {pathways} items (one per pathway)", m["stem_kernel_t"])
    if "block_kernel_t" in m:
        if len(m["block_kernel_t"]) != pathways:
            raise config_error(
                p + "block_kernel_t", f"a list of {pathways} items (one per pathway)", m["block_kernel_t"]
            )
        for i, stages in enumerate(m["block_kernel_t"]):
            if len(stages) != 4:
                raise config_error(f"{p}block_kernel_t[{i}]", "a list of 4 items (res2..res5)", stages)
            for s, blocks in enumerate(stages):
                if len(blocks) != layers[s]:
                    raise config_error(f"{p}block_kernel_t[{i}][{s}]", f"a list of {layers[s]} items (layers)", blocks)
    for name in ("nonlocal_blocks", "nonlocal_pool"):
        if name in m and len(m[name]) != 4:
            raise config_error(p + name, "a list of 4 items (res2..res5)", m[name])
    for s, blocks in enumerate(m.get("nonlocal_blocks", ())):
        for i, block in enumerate(blocks):
            if block >= layers[s]:
                raise config_error(f"{p}nonlocal_blocks[{s}][{i}]", f"a block index below {layers[s]}", block)


register_family(Family(DEFAULT_FAMILY, ResNet3dConfig, ResNet3d, features=ResNet3dFeatures, check=_check_resnet3d))
