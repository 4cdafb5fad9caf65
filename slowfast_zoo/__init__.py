"""slowfast_zoo: SlowFast and Slow-only video networks with verified weights."""

from . import variants as _variants  # noqa: F401  (registers every model)
from .checkpoint import CheckpointError, LoadReport, load_checkpoint
from .factory import create
from .model import ResNet3d, ResNet3dConfig
from .pretrained import PretrainedCfg
from .registry import UnknownModelError, get_pretrained_cfg, is_model, list_models, list_pretrained

__version__ = "0.1.0"

__all__ = [
    "CheckpointError",
    "LoadReport",
    "PretrainedCfg",
    "ResNet3d",
    "ResNet3dConfig",
    "UnknownModelError",
    "__version__",
    "create",
    "get_pretrained_cfg",
    "is_model",
    "list_models",
    "list_pretrained",
    "load_checkpoint",
]
