"""slowfast_zoo: SlowFast and Slow-only video networks with verified weights."""

import sys as _sys

from .factory import check_manifest, create, download_weights, verify_weights
from .models.freeze import FrozenBatchNorm3d, freeze, param_groups
from .models.optimize import fuse_bn, optimize_for_inference
from .models.resnet3d import ResNet3d, ResNet3dConfig, ResNet3dFeatures
from .registry import design_space as _design_space  # noqa: F401  (registers the paper's ablations)
from .registry import variants as _variants  # noqa: F401  (registers every model)
from .registry.pretrained import PretrainedCfg
from .registry.registry import UnknownModelError, get_pretrained_cfg, is_model, list_models, list_pretrained
from .tasks import data, features, metrics
from .tasks.autotune import tune
from .tasks.data import VideoClipDataset, read_rows
from .tasks.detect import BoxPrediction, detect
from .tasks.evaluate import EvalResult, evaluate
from .tasks.features import load_features
from .tasks.predict import Prediction, VideoPrediction, predict, predict_windows, sample_video
from .tasks.preprocess import create_transforms
from .version import __version__
from .weights import publish
from .weights.checkpoint import CheckpointError, LoadReport, load_checkpoint

__all__ = [
    "BoxPrediction",
    "CheckpointError",
    "EvalResult",
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
    "check_manifest",
    "create",
    "create_transforms",
    "data",
    "detect",
    "download_weights",
    "evaluate",
    "features",
    "freeze",
    "fuse_bn",
    "get_pretrained_cfg",
    "is_model",
    "list_models",
    "list_pretrained",
    "load_checkpoint",
    "load_features",
    "metrics",
    "optimize_for_inference",
    "param_groups",
    "predict",
    "predict_windows",
    "publish",
    "read_rows",
    "sample_video",
    "tune",
    "verify_weights",
]

# The short module names the README uses import as written (``from slowfast_zoo.metrics import topk_accuracy``):
# each is the same module object as its full name (``slowfast_zoo.metrics is slowfast_zoo.tasks.metrics``).
for _short, _module in {"data": data, "features": features, "metrics": metrics, "publish": publish}.items():
    _sys.modules[f"{__name__}.{_short}"] = _module
del _short, _module
