"""Feature-map metadata with timm's accessors: channels and reductions of each stage output, per pathway."""

from __future__ import annotations

import math
from typing import Any, Protocol

__all__ = ["FAST", "PATHWAYS", "SLOW", "STAGES", "FeatureInfo", "stage_feature_info"]

#: the residual stages after the stem, named as in the ResNet and SlowFast papers
STAGES = ("res2", "res3", "res4", "res5")
#: the two pathways of the SlowFast paper's Figure 1; a single-pathway network (Slow-only, I3D, C2D) has the first
SLOW, FAST = "slow", "fast"
PATHWAYS = (SLOW, FAST)


class _Widths(Protocol):
    @property
    def num_pathways(self) -> int: ...

    @property
    def width(self) -> int: ...

    @property
    def beta_inv(self) -> int: ...

    @property
    def temporal_pool(self) -> int: ...

    @property
    def spatial_strides(self) -> tuple[int, int, int, int]: ...

    @property
    def fast_downsample(self) -> int: ...

    def pathway_width(self, pathway: int) -> int: ...

    def stage_widths(self, pathway: int) -> list[tuple[int, int]]: ...


class FeatureInfo(list):
    """A list of ``{"index", "module", "num_chs", "reduction"}`` dicts, one per output, as timm's ``feature_info``.

    ``num_chs`` holds one channel count per pathway and ``reduction`` one ``(time, space)`` pair per pathway;
    :meth:`channels` and :meth:`reduction` return timm's plain integers for one pathway (default: the slow or only
    one), :meth:`temporal_reduction` the time factor.
    """

    def _get(self, key: str, idx: int | None, pick: Any) -> Any:
        if idx is not None:
            return pick(self[idx][key])
        return [pick(info[key]) for info in self]

    def channels(self, idx: int | None = None, pathway: int = 0) -> int | list[int]:
        """Channels of output ``idx`` (all outputs when None) of ``pathway``."""
        return self._get("num_chs", idx, lambda chs: chs[pathway])

    def reduction(self, idx: int | None = None, pathway: int = 0) -> int | list[int]:
        """Spatial reduction (input pixels per feature-map pixel) of output ``idx`` of ``pathway``."""
        return self._get("reduction", idx, lambda red: red[pathway][1])

    def temporal_reduction(self, idx: int | None = None, pathway: int = 0) -> int | list[int]:
        """Input frames per feature-map frame of output ``idx`` of ``pathway``."""
        return self._get("reduction", idx, lambda red: red[pathway][0])

    def module_name(self, idx: int | None = None) -> str | list[str]:
        """Name of the module giving output ``idx``."""
        return self._get("module", idx, lambda name: name)

    def get_dicts(self) -> list[dict[str, Any]]:
        """The plain dicts."""
        return [dict(info) for info in self]


def stage_feature_info(cfg: _Widths, indices: tuple[int, ...]) -> FeatureInfo:
    """Name, channels per pathway and (time, space) reduction per pathway of each stage output (0 = stem)."""
    paths = range(cfg.num_pathways)
    info = FeatureInfo()
    for i in indices:
        if i == 0:
            chs = tuple(cfg.pathway_width(p) for p in paths)
        else:
            chs = tuple(cfg.stage_widths(p)[i - 1][1] for p in paths)
        spatial = 4 * math.prod(cfg.spatial_strides[:i])
        temporal = cfg.temporal_pool if i >= 2 else 1
        info.append(
            {
                "index": i,
                "module": "stem" if i == 0 else STAGES[i - 1],
                "num_chs": chs,
                "reduction": tuple((temporal, spatial * (cfg.fast_downsample if p else 1)) for p in paths),
            }
        )
    return info
