"""slowfast_zoo: SlowFast and Slow-only video networks with verified weights."""

from . import variants as _variants  # noqa: F401  (registers every model)
from .checkpoint import CheckpointError, LoadReport, load_checkpoint
from .data import VideoClipDataset, read_rows
from .detection import BoxPrediction, detect
from .factory import create
from .features import load_features
from .freeze import FrozenBatchNorm3d, freeze, param_groups
from .inference import Prediction, VideoPrediction, predict, predict_windows, sample_video
from .model import ResNet3d, ResNet3dConfig, ResNet3dFeatures
from .optimize import fuse_bn, optimize_for_inference
from .pretrained import PretrainedCfg
from .registry import UnknownModelError, get_pretrained_cfg, is_model, list_models, list_pretrained
from .transforms import create_transforms

__version__ = "0.1.0"

__all__ = [
    "BoxPrediction",
    "CheckpointError",
    "FrozenBatchNorm3d",
    "LoadReport",
    "Prediction",
    "PretrainedCfg",
    "ResNet3d",
    "ResNet3dConfig",
    "ResNet3dFeatures",
    "UnknownModelError",
    "VideoClipDataset",
    "VideoPrediction",
    "__version__",
    "create",
    "create_transforms",
    "detect",
    "freeze",
    "fuse_bn",
    "get_pretrained_cfg",
    "is_model",
    "list_models",
    "list_pretrained",
    "load_checkpoint",
    "load_features",
    "optimize_for_inference",
    "param_groups",
    "predict",
    "predict_windows",
    "read_rows",
    "sample_video",
]
