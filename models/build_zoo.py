"""Build the onnxprune model zoo: tiny PyTorch architectures exported with both torch exporters.

Run with a Python that has torch, transformers, onnx, onnxscript and onnxruntime (NOT the project venv):

    python models/build_zoo.py            # writes models/zoo/*.onnx and models/zoo/manifest.json
    python models/build_zoo.py --only resnet,vgg

Each architecture is exported with the TorchScript exporter (``dynamo=False``) and the dynamo
exporter (``dynamo=True``). Every file is checked with ``onnx.checker``, run in onnxruntime and
compared against torch (rtol 1e-3). A dynamo export that fails is recorded in the manifest as a
skip instead of being worked around. The script is deterministic: re-running it rewrites the same
bytes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import sys
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn.functional as F
import zoo_transformers as zt
from torch import nn

ZOO_DIR = Path(__file__).resolve().parent / "zoo"
SEED = 0
RTOL = 1e-3
ATOL = 1e-4
DYNAMO_DEFAULT_OPSET = 18


# --------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------


def conv_bn(cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1, act: nn.Module | None = None) -> nn.Sequential:
    """Conv2d (no bias) + BatchNorm2d + optional activation."""
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if act is not None:
        layers.append(act)
    return nn.Sequential(*layers)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, cout, 3, stride, act=nn.ReLU())
        self.conv2 = conv_bn(cout, cout, 3, 1)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = conv_bn(cin, cout, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv2(self.conv1(x)) + identity)


class Bottleneck(nn.Module):
    """ResNet bottleneck; with ``groups > 1`` it is the ResNeXt block."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int, groups: int = 1) -> None:
        super().__init__()
        self.conv1 = conv_bn(cin, mid, 1, 1, act=nn.ReLU())
        self.conv2 = conv_bn(mid, mid, 3, stride, groups=groups, act=nn.ReLU())
        self.conv3 = conv_bn(mid, cout, 1, 1)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.downsample = conv_bn(cin, cout, 1, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        return F.relu(self.conv3(self.conv2(self.conv1(x))) + identity)


class ResNet(nn.Module):
    """Stem, two basic blocks (one with a downsample shortcut), two bottlenecks, GAP + FC."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2, act=nn.ReLU())
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = nn.Sequential(BasicBlock(16, 16, 1), BasicBlock(16, 32, 2))
        self.layer2 = nn.Sequential(Bottleneck(32, 16, 64, 2), Bottleneck(64, 16, 64, 1))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer2(self.layer1(self.pool(self.stem(x))))
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return self.fc(x)


class ResNeXt(nn.Module):
    """ResNeXt: bottlenecks with grouped 3x3 convs (groups=4 and groups=8)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2, act=nn.ReLU())
        self.blocks = nn.Sequential(
            Bottleneck(16, 32, 32, 1, groups=4),
            Bottleneck(32, 32, 64, 2, groups=8),
            Bottleneck(64, 32, 64, 1, groups=8),
        )
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.blocks(self.stem(x))
        return self.fc(x.mean((2, 3)))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, depthwise 3x3, 1x1 linear project; residual if shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn(cin, mid, 1, act=nn.ReLU6()))
        layers += [conv_bn(mid, mid, 3, stride, groups=mid, act=nn.ReLU6()), conv_bn(mid, cout, 1)]
        self.conv = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        return x + y if self.use_res else y


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, 16, 3, 2, act=nn.ReLU6()),
            InvertedResidual(16, 8, 1, 1),
            InvertedResidual(8, 16, 2, 4),
            InvertedResidual(16, 16, 1, 4),
            InvertedResidual(16, 24, 2, 4),
            InvertedResidual(24, 24, 1, 4),
            conv_bn(24, 64, 1, act=nn.ReLU6()),
        )
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1)
        return self.classifier(torch.flatten(x, 1))


class SqueezeExcite(nn.Module):
    """SE: GAP, 1x1 reduce, act, 1x1 expand, gate, channel-wise Mul."""

    def __init__(self, ch: int, squeeze: int, act: nn.Module, gate: nn.Module) -> None:
        super().__init__()
        self.fc1 = nn.Conv2d(ch, squeeze, 1)
        self.fc2 = nn.Conv2d(squeeze, ch, 1)
        self.act = act
        self.gate = gate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        return x * self.gate(self.fc2(self.act(self.fc1(s))))


class MobileV3Block(nn.Module):
    def __init__(self, cin: int, mid: int, cout: int, k: int, stride: int, se: bool, hs: bool) -> None:
        super().__init__()
        act: type[nn.Module] = nn.Hardswish if hs else nn.ReLU
        layers: list[nn.Module] = []
        if mid != cin:
            layers.append(conv_bn(cin, mid, 1, act=act()))
        layers.append(conv_bn(mid, mid, k, stride, groups=mid, act=act()))
        if se:
            layers.append(SqueezeExcite(mid, max(8, mid // 4), nn.ReLU(), nn.Hardsigmoid()))
        layers.append(conv_bn(mid, cout, 1))
        self.block = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_res else y


class MobileNetV3(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, 16, 3, 2, act=nn.Hardswish()),
            MobileV3Block(16, 16, 16, 3, 2, se=True, hs=False),
            MobileV3Block(16, 48, 24, 3, 2, se=False, hs=False),
            MobileV3Block(24, 64, 24, 5, 1, se=True, hs=True),
            MobileV3Block(24, 64, 32, 5, 2, se=True, hs=True),
            conv_bn(32, 64, 1, act=nn.Hardswish()),
        )
        self.classifier = nn.Sequential(nn.Linear(64, 64), nn.Hardswish(), nn.Linear(64, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(x)


class MBConv(nn.Module):
    """EfficientNet MBConv: expand (SiLU), depthwise (SiLU), SE (SiLU + sigmoid), project."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn(cin, mid, 1, act=nn.SiLU()))
        layers += [
            conv_bn(mid, mid, k, stride, groups=mid, act=nn.SiLU()),
            SqueezeExcite(mid, max(4, cin // 4), nn.SiLU(), nn.Sigmoid()),
            conv_bn(mid, cout, 1),
        ]
        self.block = nn.Sequential(*layers)
        self.use_res = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.use_res else y


class EfficientNet(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16, 3, 2, act=nn.SiLU())
        self.blocks = nn.Sequential(
            MBConv(16, 8, 3, 1, 1),
            MBConv(8, 16, 3, 2, 4),
            MBConv(16, 16, 3, 1, 4),
            MBConv(16, 24, 5, 2, 4),
            MBConv(24, 24, 5, 1, 4),
        )
        self.head = conv_bn(24, 64, 1, act=nn.SiLU())
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class DenseLayer(nn.Module):
    """Pre-activation BN-ReLU-Conv1x1-BN-ReLU-Conv3x3, output concatenated to the input."""

    def __init__(self, cin: int, growth: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, 2 * growth, 1, bias=False)
        self.norm2 = nn.BatchNorm2d(2 * growth)
        self.conv2 = nn.Conv2d(2 * growth, growth, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv1(F.relu(self.norm1(x)))
        y = self.conv2(F.relu(self.norm2(y)))
        return torch.cat([x, y], 1)


class Transition(nn.Sequential):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, cout, 1, bias=False), nn.AvgPool2d(2))


class DenseNet(nn.Module):
    def __init__(self, num_classes: int = 10, growth: int = 8) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1, bias=False), nn.MaxPool2d(2))
        layers: list[nn.Module] = []
        ch = 16
        for i in range(2):
            for _ in range(3):
                layers.append(DenseLayer(ch, growth))
                ch += growth
            if i == 0:
                layers.append(Transition(ch, ch // 2))
                ch //= 2
        self.features = nn.Sequential(*layers)
        self.norm = nn.BatchNorm2d(ch)
        self.fc = nn.Linear(ch, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.norm(self.features(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


class InceptionBlock(nn.Module):
    """Four parallel branches (1x1, 1x1-3x3, 1x1-3x3-3x3, maxpool-1x1) concatenated on channels."""

    def __init__(self, cin: int, c1: int, c3r: int, c3: int, c5r: int, c5: int, cp: int) -> None:
        super().__init__()
        relu = nn.ReLU
        self.b1 = conv_bn(cin, c1, 1, act=relu())
        self.b2 = nn.Sequential(conv_bn(cin, c3r, 1, act=relu()), conv_bn(c3r, c3, 3, act=relu()))
        self.b3 = nn.Sequential(
            conv_bn(cin, c5r, 1, act=relu()), conv_bn(c5r, c5, 3, act=relu()), conv_bn(c5, c5, 3, act=relu())
        )
        self.b4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), conv_bn(cin, cp, 1, act=relu()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.b1(x), self.b2(x), self.b3(x), self.b4(x)], 1)


class Inception(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, 3, 2, act=nn.ReLU()), nn.MaxPool2d(3, 2, 1))
        self.inc1 = InceptionBlock(16, 8, 8, 16, 4, 8, 8)  # -> 40
        self.inc2 = InceptionBlock(40, 16, 16, 24, 8, 16, 8)  # -> 64
        self.pool = nn.MaxPool2d(3, 2, 1)
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.inc2(self.pool(self.inc1(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    b, c, h, w = x.shape
    x = x.reshape(b, groups, c // groups, h, w).transpose(1, 2)
    return x.reshape(b, c, h, w)


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit. stride 1: chunk split + right branch; stride 2: both branches downsample."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        half = cout // 2
        bin_ = cin if stride == 2 else cin // 2
        if stride == 2:
            self.left = nn.Sequential(conv_bn(cin, cin, 3, 2, groups=cin), conv_bn(cin, half, 1, act=nn.ReLU()))
        self.right = nn.Sequential(
            conv_bn(bin_, half, 1, act=nn.ReLU()),
            conv_bn(half, half, 3, stride, groups=half),
            conv_bn(half, half, 1, act=nn.ReLU()),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            a, b = x.chunk(2, dim=1)
            out = torch.cat([a, self.right(b)], 1)
        else:
            out = torch.cat([self.left(x), self.right(x)], 1)
        return channel_shuffle(out, 2)


class ShuffleNetV2(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(conv_bn(3, 16, 3, 2, act=nn.ReLU()), nn.MaxPool2d(3, 2, 1))
        self.stage2 = nn.Sequential(ShuffleUnit(16, 32, 2), ShuffleUnit(32, 32, 1), ShuffleUnit(32, 32, 1))
        self.stage3 = nn.Sequential(ShuffleUnit(32, 64, 2), ShuffleUnit(64, 64, 1))
        self.conv5 = conv_bn(64, 64, 1, act=nn.ReLU())
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv5(self.stage3(self.stage2(self.stem(x))))
        return self.fc(x.mean([2, 3]))


def double_conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(conv_bn(cin, cout, 3, act=nn.ReLU()), conv_bn(cout, cout, 3, act=nn.ReLU()))


class UNet(nn.Module):
    """3-level U-Net: ConvTranspose up-sampling with skip concat, plus one bilinear Upsample."""

    def __init__(self, out_ch: int = 2) -> None:
        super().__init__()
        self.enc1 = double_conv(3, 8)
        self.enc2 = double_conv(8, 16)
        self.bott = double_conv(16, 32)
        self.up2 = nn.ConvTranspose2d(32, 16, 2, 2)
        self.dec2 = double_conv(32, 16)
        self.up1 = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False)
        self.dec1 = double_conv(16 + 8, 8)
        self.head = nn.Conv2d(8, out_ch, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        b = self.bott(F.max_pool2d(e2, 2))
        d2 = self.dec2(torch.cat([self.up2(b), e2], 1))
        d1 = self.dec1(torch.cat([self.up1(d2), e1], 1))
        return self.head(d1)


def conv_bn_silu(cin: int, cout: int, k: int = 1, s: int = 1) -> nn.Sequential:
    return conv_bn(cin, cout, k, s, act=nn.SiLU())


class YoloBottleneck(nn.Module):
    def __init__(self, ch: int, shortcut: bool) -> None:
        super().__init__()
        self.cv1 = conv_bn_silu(ch, ch, 3)
        self.cv2 = conv_bn_silu(ch, ch, 3)
        self.add = shortcut

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C2f(nn.Module):
    """YOLOv8 C2f: 1x1 conv, split in two, chained bottlenecks, concat of all pieces, 1x1 conv."""

    def __init__(self, cin: int, cout: int, n: int = 1, shortcut: bool = True) -> None:
        super().__init__()
        self.c = cout // 2
        self.cv1 = conv_bn_silu(cin, 2 * self.c, 1)
        self.cv2 = conv_bn_silu((2 + n) * self.c, cout, 1)
        self.m = nn.ModuleList(YoloBottleneck(self.c, shortcut) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).split((self.c, self.c), 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


class SPPF(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin // 2
        self.cv1 = conv_bn_silu(cin, mid, 1)
        self.cv2 = conv_bn_silu(mid * 4, cout, 1)
        self.m = nn.MaxPool2d(5, 1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(torch.cat([x, y1, y2, self.m(y2)], 1))


class YoloV8Neck(nn.Module):
    """Tiny YOLOv8-style backbone + PAN neck + per-level detect-head convs (box + cls)."""

    def __init__(self, num_classes: int = 4) -> None:
        super().__init__()
        self.b0 = conv_bn_silu(3, 8, 3, 2)
        self.b1 = conv_bn_silu(8, 16, 3, 2)
        self.b2 = C2f(16, 16, 1)
        self.b3 = conv_bn_silu(16, 32, 3, 2)
        self.b4 = C2f(32, 32, 2)  # P3
        self.b5 = conv_bn_silu(32, 64, 3, 2)
        self.b6 = C2f(64, 64, 1)
        self.sppf = SPPF(64, 64)  # P4
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.n1 = C2f(64 + 32, 32, 1, shortcut=False)  # P3 out
        self.down = conv_bn_silu(32, 32, 3, 2)
        self.n2 = C2f(32 + 64, 64, 1, shortcut=False)  # P4 out
        self.box = nn.ModuleList(
            nn.Sequential(conv_bn_silu(c, 16, 3), nn.Conv2d(16, 4 * 4, 1)) for c in (32, 64)
        )
        self.cls = nn.ModuleList(
            nn.Sequential(conv_bn_silu(c, 16, 3), nn.Conv2d(16, num_classes, 1)) for c in (32, 64)
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        p3 = self.b4(self.b3(self.b2(self.b1(self.b0(x)))))
        p4 = self.sppf(self.b6(self.b5(p3)))
        n3 = self.n1(torch.cat([self.up(p4), p3], 1))
        n4 = self.n2(torch.cat([self.down(n3), p4], 1))
        outs = [torch.cat([box(f), cls(f)], 1) for f, box, cls in zip((n3, n4), self.box, self.cls, strict=True)]
        return outs[0], outs[1]


class Audio1D(nn.Module):
    """Conv1d/BN/ReLU stack with pooling, GAP over time and a Linear classifier."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()

        def block(cin: int, cout: int, k: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv1d(cin, cout, k, padding=k // 2), nn.BatchNorm1d(cout), nn.ReLU())

        self.features = nn.Sequential(
            block(1, 16, 9), nn.MaxPool1d(4), block(16, 32, 5), nn.MaxPool1d(4), block(32, 64, 3), block(64, 64, 3)
        )
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.adaptive_avg_pool1d(self.features(x), 1).squeeze(-1)
        return self.fc(x)


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 48), nn.GELU(), nn.Linear(48, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ConvNeXtBlock(nn.Module):
    """dwconv 7x7 -> permute NHWC -> LayerNorm -> Linear 4x -> GELU -> Linear -> layer-scale -> NCHW + x."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dwconv = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(4 * dim, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.pwconv2(self.act(self.pwconv1(self.norm(y))))
        y = (self.gamma * y).permute(0, 3, 1, 2)
        return x + y


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels of an NCHW tensor, via permute to channels-last and back."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvNeXt(nn.Module):
    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 4, 4), LayerNorm2d(16, eps=1e-6))
        self.stage1 = ConvNeXtBlock(16)
        self.down = nn.Sequential(LayerNorm2d(16, eps=1e-6), nn.Conv2d(16, 32, 2, 2))
        self.stage2 = nn.Sequential(ConvNeXtBlock(32), ConvNeXtBlock(32))
        self.norm = nn.LayerNorm(32, eps=1e-6)
        self.head = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.down(self.stage1(self.stem(x))))
        return self.head(self.norm(x.mean([-2, -1])))


class MultiHeadSelfAttention(nn.Module):
    """Explicit MHSA: Linear q/k/v, reshape to heads, matmul, softmax, matmul, merge heads, Linear."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim**-0.5
        self.q = nn.Linear(dim, dim)
        self.k = nn.Linear(dim, dim)
        self.v = nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.reshape(b, n, self.heads, self.head_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self._split(self.q(x)), self._split(self.k(x)), self._split(self.v(x))
        attn = torch.softmax(torch.matmul(q, k.transpose(-2, -1)) * self.scale, dim=-1)
        out = torch.matmul(attn, v).transpose(1, 2).reshape(b, n, c)
        return self.proj(out)


class EncoderLayer(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = MultiHeadSelfAttention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class TinyViT(nn.Module):
    def __init__(self, num_classes: int = 10, dim: int = 32, heads: int = 4, patch: int = 8, img: int = 32) -> None:
        super().__init__()
        self.patch = nn.Conv2d(3, dim, patch, patch)
        self.pos = nn.Parameter(torch.randn(1, (img // patch) ** 2, dim) * 0.02)
        self.layers = nn.Sequential(EncoderLayer(dim, heads), EncoderLayer(dim, heads))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        x = self.norm(self.layers(x))
        return self.head(x.mean(1))


class ConvLSTM(nn.Module):
    """Conv1d front-end over (B, C, T), then nn.LSTM over time (batch_first), then Linear."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.front = nn.Sequential(
            nn.Conv1d(8, 16, 3, padding=1), nn.BatchNorm1d(16), nn.ReLU(), nn.Conv1d(16, 24, 3, padding=1), nn.ReLU()
        )
        self.lstm = nn.LSTM(24, 32, batch_first=True)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.front(x).transpose(1, 2)
        out, _ = self.lstm(y)
        return self.fc(out[:, -1])


class VGG(nn.Module):
    """Plain conv stack; nn.Flatten of a 64x4x4 map feeds a Linear (channel -> 16-column block)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        cfg: list[int | str] = [16, "M", 32, "M", 64, 64, "M"]
        layers: list[nn.Module] = []
        ch = 3
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                assert isinstance(v, int)
                layers += [nn.Conv2d(ch, v, 3, padding=1), nn.BatchNorm2d(v), nn.ReLU()]
                ch = v
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(64 * 4 * 4, 64), nn.ReLU(), nn.Dropout(), nn.Linear(64, num_classes)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class ViewNet(nn.Module):
    """Small CNN whose classifier input is ``x.view(x.size(0), -1)`` (exported with dynamic batch)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = conv_bn(3, 16, 3, 2, act=nn.ReLU())
        self.conv2 = conv_bn(16, 32, 3, 2, act=nn.ReLU())
        self.fc1 = nn.Linear(32 * 8 * 8, 32)
        self.fc2 = nn.Linear(32, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(x))
        x = x.view(x.size(0), -1)
        return self.fc2(F.relu(self.fc1(x)))


# --------------------------------------------------------------------------------------------
# Zoo specification
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Spec:
    name: str
    factory: Callable[[], nn.Module]
    inputs: dict[str, tuple[int, ...]]
    ts_opset: int
    description: str
    dynamic_batch: bool = False
    dynamo_opset: int = DYNAMO_DEFAULT_OPSET
    outputs: tuple[str, ...] = ("output",)
    # optimize=False keeps the dynamo exporter's raw graph (un-fused Conv -> BatchNormalization, Constants).
    dynamo_optimize: bool = True
    # Names of the leading dynamic axes of every input and output (with dynamic_batch).
    dynamic: tuple[str, ...] = ("batch",)
    # Example values from the input shapes (default: N(0,1) floats).
    example: Callable[[dict[str, tuple[int, ...]], torch.Generator], tuple[torch.Tensor, ...]] | None = None


IMG = (3, 64, 64)


def _tokens(*names: str) -> dict[str, tuple[int, ...]]:
    return {n: (2, zt.SEQ) for n in names}


# Text models: dynamic batch and sequence, integer inputs with valid values, one output.
_TEXT: dict[str, Any] = dict(dynamic_batch=True, dynamic=("batch", "sequence"), outputs=("last_hidden_state",),
                             example=zt.token_inputs)

SPECS: list[Spec] = [
    Spec("resnet", ResNet, {"input": (2, *IMG)}, 13,
         "ResNet: basic + bottleneck blocks, 1x1 conv+BN downsample shortcuts, GAP, FC", dynamic_batch=True),
    Spec("mobilenetv2", MobileNetV2, {"input": (1, *IMG)}, 11,
         "MobileNetV2: inverted residuals, depthwise 3x3, ReLU6 (Clip), linear bottlenecks"),
    Spec("mobilenetv3", MobileNetV3, {"input": (1, *IMG)}, 17,
         "MobileNetV3: SE with hardsigmoid gate, hardswish, 5x5 depthwise", dynamo_opset=20),
    Spec("efficientnet", EfficientNet, {"input": (1, *IMG)}, 13,
         "EfficientNet: MBConv with SiLU, squeeze-excite (sigmoid gate), residual adds"),
    Spec("densenet", DenseNet, {"input": (1, *IMG)}, 11,
         "DenseNet: dense blocks (pre-activation BN-ReLU-Conv, growing concat), transition conv+avgpool"),
    Spec("inception", Inception, {"input": (2, *IMG)}, 13,
         "Inception: 4 parallel branches incl. maxpool+1x1 branch, concatenated", dynamic_batch=True),
    Spec("shufflenetv2", ShuffleNetV2, {"input": (1, *IMG)}, 11,
         "ShuffleNetV2: chunk channel split, reshape-transpose-reshape channel shuffle, stride-2 units"),
    Spec("unet", UNet, {"input": (1, *IMG)}, 11,
         "U-Net: ConvTranspose up-sampling + skip concat, one bilinear nn.Upsample (Resize) + skip concat"),
    Spec("resnext", ResNeXt, {"input": (1, *IMG)}, 17,
         "ResNeXt: bottlenecks with grouped 3x3 conv (groups=4 and 8)"),
    Spec("yolov8", YoloV8Neck, {"images": (1, *IMG)}, 13,
         "YOLOv8-style: C2f (split/concat, residual bottlenecks), SPPF (chained maxpools), nearest upsample, detect convs",
         outputs=("p3", "p4")),
    Spec("audio1d", Audio1D, {"waveform": (2, 1, 1024)}, 13,
         "1-D audio CNN: Conv1d/BN/ReLU stack, MaxPool1d, GAP, Linear classifier", dynamic_batch=True,
         dynamo_optimize=False),
    Spec("mlp", MLP, {"input": (2, 32)}, 11, "MLP: Linear-ReLU-Linear-GELU-Linear", dynamic_batch=True),
    Spec("convnext", ConvNeXt, {"input": (1, *IMG)}, 17,
         "ConvNeXt: depthwise 7x7, LayerNorm over channels-last via permute, Linear MLP, layer-scale Mul",
         dynamo_opset=20),
    Spec("transformer", TinyViT, {"input": (1, 3, 32, 32)}, 13,
         "Tiny ViT: patch-embed conv, flatten+transpose, 2 encoder layers with explicit MHSA, LayerNorm, GELU FFN"),
    Spec("lstm", ConvLSTM, {"input": (1, 8, 32)}, 11, "Conv1d front-end, nn.LSTM (batch_first), Linear on last step"),
    Spec("vgg", VGG, {"input": (1, 3, 32, 32)}, 13,
         "VGG: plain conv/BN/ReLU stack, nn.Flatten into Linear (each channel maps to a 16-wide block)",
         dynamo_optimize=False),
    Spec("viewnet", ViewNet, {"input": (2, 3, 32, 32)}, 11,
         "CNN with x.view(x.size(0), -1) before the Linear classifier, dynamic batch", dynamic_batch=True),
    Spec("bert2", lambda: zt.bert(token_types=False, attn="eager"), _tokens("input_ids", "attention_mask"), 14,
         "BERT (transformers, random init), eager attention: input_ids, attention_mask as (1 - mask) * min",
         **_TEXT),
    Spec("bert3", lambda: zt.bert(token_types=True, attn="sdpa"),
         _tokens("input_ids", "attention_mask", "token_type_ids"), 14,
         "BERT (transformers, random init), sdpa mask path (Where): input_ids, attention_mask, token_type_ids",
         **_TEXT),
    Spec("t5enc", zt.t5_encoder, _tokens("input_ids", "attention_mask"), 14,
         "T5 encoder (transformers, random init): RMS norm, relative position buckets, ReLU FFN", **_TEXT),
    Spec("t5", zt.t5, _tokens("input_ids", "attention_mask", "decoder_input_ids"), 14,
         "T5 encoder-decoder (transformers, random init): causal self-attention, cross-attention", **_TEXT),
]


# --------------------------------------------------------------------------------------------
# Construction, export, verification
# --------------------------------------------------------------------------------------------


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def randomise_norms(model: nn.Module, gen: torch.Generator) -> None:
    """Make BatchNorm / LayerNorm non-trivial so that folding and pruning bugs show up numerically."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, nn.modules.batchnorm._BatchNorm):
                n = mod.num_features
                assert mod.running_mean is not None and mod.running_var is not None
                mod.running_mean.copy_(torch.randn(n, generator=gen) * 0.2)
                mod.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                mod.weight.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                mod.bias.copy_(torch.randn(n, generator=gen) * 0.2)
            elif isinstance(mod, nn.LayerNorm) and mod.elementwise_affine:
                mod.weight.copy_(torch.rand(mod.weight.shape, generator=gen) * 1.5 + 0.5)
                mod.bias.copy_(torch.randn(mod.bias.shape, generator=gen) * 0.2)


def build_model(spec: Spec) -> nn.Module:
    seed_everything(SEED)
    model = spec.factory()
    gen = torch.Generator().manual_seed(SEED + 1)
    randomise_norms(model, gen)
    return model.eval()


def example_inputs(spec: Spec, batch: int | None = None, seq: int | None = None) -> tuple[torch.Tensor, ...]:
    """The traced inputs, or the same with another batch (dim 0) or sequence length (dim 1)."""
    gen = torch.Generator().manual_seed(SEED + 2)
    shapes = {}
    for name, shape in spec.inputs.items():
        s = (batch, *shape[1:]) if batch is not None else shape
        shapes[name] = (s[0], seq, *s[2:]) if seq is not None else s
    if spec.example is not None:
        return spec.example(shapes, gen)
    return tuple(torch.randn(*s, generator=gen) for s in shapes.values())


def export_torchscript(spec: Spec, model: nn.Module, path: Path) -> None:
    dyn = None
    if spec.dynamic_batch:
        dyn = {n: dict(enumerate(spec.dynamic)) for n in (*spec.inputs, *spec.outputs)}
    torch.onnx.export(
        model,
        example_inputs(spec),
        str(path),
        dynamo=False,
        opset_version=spec.ts_opset,
        input_names=list(spec.inputs),
        output_names=list(spec.outputs),
        dynamic_axes=dyn,
        do_constant_folding=True,
    )


def export_dynamo(spec: Spec, model: nn.Module, path: Path) -> None:
    dyn: tuple[dict[int, Any], ...] | None = None
    if spec.dynamic_batch:
        dims = [torch.export.Dim(n, min=1 if i == 0 else 2, max=1024 if i == 0 else zt.MAX_POSITIONS)
                for i, n in enumerate(spec.dynamic)]
        dyn = tuple(dict(enumerate(dims)) for _ in spec.inputs)  # one per positional input, in order
    program = torch.onnx.export(
        model,
        example_inputs(spec),
        dynamo=True,
        opset_version=spec.dynamo_opset,
        input_names=list(spec.inputs),
        output_names=list(spec.outputs),
        dynamic_shapes=dyn,
        external_data=False,
        optimize=spec.dynamo_optimize,
        verbose=False,
    )
    assert program is not None
    program.save(str(path), external_data=False)


def normalise_onnx(path: Path) -> onnx.ModelProto:
    """Strip doc strings / stack-trace metadata (they hold absolute paths) so output is reproducible."""
    model = onnx.load(str(path))
    model.doc_string = ""
    _strip_graph(model.graph)
    for fn in model.functions:
        fn.doc_string = ""
        for node in fn.node:
            node.doc_string = ""
            del node.metadata_props[:]
    onnx.save(model, str(path))
    return model


def _strip_graph(graph: onnx.GraphProto) -> None:
    graph.doc_string = ""
    del graph.metadata_props[:]
    for vi in (*graph.input, *graph.output, *graph.value_info):
        vi.doc_string = ""
        del vi.metadata_props[:]
    for init in graph.initializer:
        init.doc_string = ""
        del init.metadata_props[:]
    for node in graph.node:
        node.doc_string = ""
        del node.metadata_props[:]
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                _strip_graph(attr.g)
            for g in attr.graphs:
                _strip_graph(g)


def verify(spec: Spec, model: nn.Module, path: Path) -> None:
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    runs: list[tuple[int | None, int | None]] = [(None, None)]
    if spec.dynamic_batch:
        runs += [(1, None), (3, None)]
    if "sequence" in spec.dynamic:
        runs += [(2, 7)]
    for batch, seq in runs:
        inputs = example_inputs(spec, batch, seq)
        with torch.no_grad():
            ref = model(*inputs)
        refs = ref if isinstance(ref, tuple) else (ref,)
        feed = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), inputs, strict=True)}
        outs = sess.run(None, feed)
        assert len(outs) == len(refs), (len(outs), len(refs))
        for o, r in zip(outs, refs, strict=True):
            np.testing.assert_allclose(o, r.numpy(), rtol=RTOL, atol=ATOL, err_msg=f"{path.name} batch={batch} seq={seq}")


def describe_io(path: Path) -> dict[str, Any]:
    model = onnx.load(str(path))
    inits = {i.name for i in model.graph.initializer}

    def dims(vi: onnx.ValueInfoProto) -> list[int | str]:
        return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in vi.type.tensor_type.shape.dim]

    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    return {
        "opset": opset,
        "ir_version": model.ir_version,
        "inputs": [{"name": i.name, "shape": dims(i)} for i in model.graph.input if i.name not in inits],
        "outputs": [{"name": o.name, "shape": dims(o)} for o in model.graph.output],
        "nodes": len(model.graph.node),
        "size_bytes": path.stat().st_size,
    }


EXPORTERS: dict[str, Callable[[Spec, nn.Module, Path], None]] = {
    "ts": export_torchscript,
    "dynamo": export_dynamo,
}
EXPORTER_NAMES = {"ts": "torchscript", "dynamo": "dynamo"}


@dataclass
class Results:
    entries: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)


def build_one(spec: Spec, tag: str, results: Results) -> None:
    path = ZOO_DIR / f"{spec.name}_{tag}.onnx"
    model = build_model(spec)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            EXPORTERS[tag](spec, model, path)
        normalise_onnx(path)
    except Exception as exc:  # noqa: BLE001 - any exporter failure is recorded, not fatal
        if tag == "ts":
            raise
        reason = f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}" if str(exc).strip() else type(exc).__name__
        print(f"  SKIP {path.name}: {reason}", flush=True)
        traceback.print_exc(limit=2, file=sys.stderr)
        path.unlink(missing_ok=True)
        results.skipped.append({"arch": spec.name, "exporter": EXPORTER_NAMES[tag], "reason": reason})
        return
    verify(spec, model, path)
    info = describe_io(path)
    results.entries.append(
        {
            "name": path.stem,
            "arch": spec.name,
            "file": path.name,
            "exporter": EXPORTER_NAMES[tag],
            **info,
            "dynamic_batch": spec.dynamic_batch,
            "optimized": tag == "ts" or spec.dynamo_optimize,
            "description": spec.description,
        }
    )
    print(f"  ok   {path.name}: opset {info['opset']}, {info['nodes']} nodes, {info['size_bytes']} bytes", flush=True)


def write_manifest(results: Results) -> None:
    manifest = {
        "generator": "models/build_zoo.py",
        "torch": torch.__version__.split("+")[0],
        "onnx": onnx.__version__,
        "seed": SEED,
        "dynamic_dim_note": "string entries in a shape (e.g. 'batch') are dynamic dims",
        "models": sorted(results.entries, key=lambda e: e["name"]),
        "skipped": sorted(results.skipped, key=lambda e: (e["arch"], e["exporter"])),
    }
    tmp = ZOO_DIR / "manifest.json.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, ZOO_DIR / "manifest.json")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", default="", help="comma-separated architecture names (default: all)")
    p.add_argument("--exporters", default="ts,dynamo", help="comma-separated subset of: ts,dynamo")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    only = {s for s in args.only.split(",") if s}
    tags = [t for t in args.exporters.split(",") if t]
    ZOO_DIR.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    results = Results()
    specs = [s for s in SPECS if not only or s.name in only]
    for spec in specs:
        print(f"[{spec.name}]", flush=True)
        for tag in tags:
            build_one(spec, tag, results)
    if only or tags != ["ts", "dynamo"]:
        _merge_previous(results, {s.name for s in specs}, set(tags))
    write_manifest(results)
    total = sum(p.stat().st_size for p in ZOO_DIR.glob("*.onnx"))
    print(f"{len(results.entries)} models, {len(results.skipped)} skipped, {total / 1e6:.2f} MB in {ZOO_DIR}")
    return 0


def _merge_previous(results: Results, archs: set[str], tags: set[str]) -> None:
    """With --only/--exporters, keep manifest entries of the models that were not rebuilt."""
    path = ZOO_DIR / "manifest.json"
    if not path.exists():
        return
    old = json.loads(path.read_text())
    names = {EXPORTER_NAMES[t] for t in tags}
    results.entries += [e for e in old["models"] if not (e["arch"] in archs and e["exporter"] in names)]
    results.skipped += [s for s in old["skipped"] if not (s["arch"] in archs and s["exporter"] in names)]


if __name__ == "__main__":
    sys.exit(main())
