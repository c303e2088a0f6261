"""ResNet-18 image encoder (He et al. 2016), the cross-modal method's F_img (Section 3.2 of the
cross-modal 2D-3D paper): a 7x7/2 convolution + BN + ReLU + 3x3/2 max-pool, four stages of
two basic blocks with {64, 128, 256, 512} 3x3 kernels, global average pooling -> 512-d.

Plain PyTorch with torchvision's parameter names (``conv1``, ``bn1``, ``layer1.0.conv1``,
``layer2.0.downsample.0``, ``fc``...), so a torchvision ``resnet18`` state dict loads
(:func:`torchvision_state_dict` adapts its 3-channel first convolution to grayscale);
torchvision itself is not a dependency (DESIGN.md).

It is not a point backbone, so it is not in ``BACKBONES`` (the point-backbone contract tests
and the ``--backbone`` choices stay point-only); it exports in the same file format as
``backbone.pt`` (:func:`pointssl.backbones.save_backbone`) and loads with
:func:`load_image_encoder`.
"""

from __future__ import annotations

import torch
from torch import nn

from pointssl.errors import PointSSLError

__all__ = ["BasicBlock", "ResNet18", "IMAGE_ENCODERS", "build_image_encoder",
           "load_image_encoder", "torchvision_state_dict", "images_to_input"]


def images_to_input(images: torch.Tensor) -> torch.Tensor:
    """Rendered grayscale images, uint8 (N, 1, H, W) (or floats in [0, 1]), -> the encoder's
    input: float in [-1, 1]. Training and every protocol use this one convention."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images.float()
    return (x - 0.5) / 0.5


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                            nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + idt)


class ResNet18(nn.Module):
    """``forward(images (B, C, H, W) float)`` -> (B, 512) global-average-pooled features
    (``num_classes > 0`` adds torchvision's ``fc`` and returns its logits instead)."""

    name = "resnet18"

    def __init__(self, in_channels: int = 1, widths=(64, 128, 256, 512), num_classes: int = 0):
        super().__init__()
        widths = [int(w) for w in widths]
        if len(widths) != 4:
            raise PointSSLError(f"resnet18 widths: four stages, got {widths}")
        self.config = {"in_channels": int(in_channels), "widths": widths,
                       "num_classes": int(num_classes)}
        self.conv1 = nn.Conv2d(in_channels, widths[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        c = widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(c, w, stride),
                                                         BasicBlock(w, w)))
            c = w
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.global_dim = c
        self.in_channels = int(in_channels)
        self.fc = nn.Linear(c, num_classes) if num_classes > 0 else None
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        # NHWC weights and activations: oneDNN's convolutions on the CPU run a training step
        # ~1.2x faster in fp32 and ~1.5x in bf16 than NCHW (same values, same state dict)
        self.to(memory_format=torch.channels_last)

    @classmethod
    def test_config(cls) -> dict:
        return {"widths": (4, 8, 8, 16)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise PointSSLError(f"resnet18 takes (B, {self.in_channels}, H, W) images, got "
                                f"{tuple(x.shape)}")
        x = x.contiguous(memory_format=torch.channels_last)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = torch.flatten(self.avgpool(x), 1)
        return x if self.fc is None else self.fc(x)


IMAGE_ENCODERS = {"resnet18": ResNet18}


def build_image_encoder(name: str = "resnet18", **config) -> nn.Module:
    if name not in IMAGE_ENCODERS:
        raise PointSSLError(f"unknown image encoder {name!r}; choose one of "
                            f"{', '.join(IMAGE_ENCODERS)}")
    return IMAGE_ENCODERS[name](**config)


def torchvision_state_dict(state: dict, in_channels: int = 1, keep_fc: bool = False) -> dict:
    """A torchvision ``resnet18`` state dict for a :class:`ResNet18` with ``in_channels``: a
    grayscale first convolution gets the sum of the RGB filters (the same response to a gray
    image replicated over three channels); ``fc`` is dropped unless ``keep_fc``."""
    out = {k: v for k, v in state.items() if keep_fc or not k.startswith("fc.")}
    w = out["conv1.weight"]
    if w.shape[1] != in_channels:
        if in_channels != 1:
            raise PointSSLError(f"cannot adapt a {w.shape[1]}-channel conv1 to {in_channels}")
        out["conv1.weight"] = w.sum(1, keepdim=True)
    return out


def load_image_encoder(path, map_location="cpu") -> tuple[nn.Module, dict]:
    """Rebuild an exported image encoder (``image_encoder.pt``, the ``backbone.pt`` format;
    never executes code from the file); returns (encoder, meta)."""
    from pointssl.backbones import FORMAT
    from pointssl.utils import load_checkpoint

    blob = load_checkpoint(path, fmt=FORMAT, map_location=map_location)
    name = blob.get("backbone")
    if name not in IMAGE_ENCODERS:
        raise PointSSLError(f"{path}: holds a {name!r} network, not an image encoder "
                            f"({', '.join(IMAGE_ENCODERS)}); pass the run's image_encoder.pt")
    try:
        enc = build_image_encoder(name, **blob["config"])
        enc.load_state_dict(blob["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        msg = " ".join(str(e).split())[:300]
        raise PointSSLError(f"{path}: cannot rebuild the image encoder ({msg})") from None
    return enc, dict(blob.get("meta", {}), pointssl_version=blob.get("pointssl_version"))
