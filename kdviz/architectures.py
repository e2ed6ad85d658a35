"""The model registry's entries: kdviz's own architectures (Hinton's MLPs, LeNet, a wide CNN,
CIFAR-style ResNets) and any torchvision or timm classifier, built without weights.

Each builder is registered with ``kdviz.models.register_model`` and called as
``builder(name, num_classes, in_shape, **kwargs)``; ``kdviz.models.create_model`` is the way in.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

from kdviz.errors import KdvizError
from kdviz.models import (
    MAX_CHANNELS,
    MAX_LAYERS,
    _check_params,
    _is_int,
    _is_real,
    _short,
    register_model,
)


def _check_prob(value: Any, what: str) -> float:
    if not _is_real(value) or not 0.0 <= value < 1.0:
        raise KdvizError(f"{what} {value!r} is not valid; give a probability in [0, 1).")
    return float(value)


class MLP(nn.Module):
    """Flatten -> [Linear -> ReLU -> Dropout] per hidden size -> Linear (Hinton et al. 2015, sec. 3)."""

    def __init__(
        self,
        in_features: int,
        hidden: tuple[int, ...],
        num_classes: int,
        dropout: float = 0.0,
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        # p = 0 is Identity: a zero-rate Dropout still draws a mask in training mode
        self.input_dropout = nn.Dropout(input_dropout) if input_dropout else nn.Identity()
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        sizes = (in_features, *hidden)
        self.hidden = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=True)
        )
        self.head = nn.Linear(sizes[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.input_dropout(x.flatten(1))  # (N, C*H*W)
        for layer in self.hidden:
            x = self.dropout(F.relu(layer(x)))  # (N, H_i)
        return self.head(x)  # (N, K)


_MLP_NAME = re.compile(r"mlp((?:-[0-9]+)+)")


@register_model(
    "mlp-*",
    examples=("mlp-1200-1200", "mlp-800-800", "mlp-30-30"),
    description="mlp-H1-H2-... (any hidden sizes)",
)
def mlp(
    name: str,
    num_classes: int,
    in_shape: tuple[int, int, int],
    *,
    dropout: float = 0.0,
    input_dropout: float = 0.0,
) -> nn.Module:
    """Fully connected ReLU net; Hinton's MNIST teacher is mlp-1200-1200, dropout 0.5, input 0.2."""
    match = _MLP_NAME.fullmatch(name)
    parts = match.group(1).split("-")[1:] if match else []
    # a 30-digit size is over any limit; int() of thousands of digits is itself refused by Python
    hidden = tuple(int(h) if len(h) <= 18 else 10**18 for h in parts)
    if not hidden or any(h < 1 for h in hidden):
        raise KdvizError(
            f"Model name {name!r} is not valid; write mlp-H1-H2-... with positive hidden sizes, e.g. mlp-800-800."
        )
    if len(hidden) > MAX_LAYERS:
        raise KdvizError(
            f"The model {_short(name)!r} has {len(hidden)} hidden layers, over kdviz's limit of {MAX_LAYERS}; use fewer."
        )
    c, h, w = in_shape
    sizes = (c * h * w, *hidden, num_classes)  # Linear(a, b) has a * b weights and b biases
    _check_params(name, sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True)))
    return MLP(
        c * h * w,
        hidden,
        num_classes,
        dropout=_check_prob(dropout, "dropout"),
        input_dropout=_check_prob(input_dropout, "input_dropout"),
    )


class LeNet(nn.Module):
    """LeNet-5 style (LeCun et al. 1998) with ReLU and max pooling.

    Both convolutions are padded ("same" size) and an adaptive pool fixes the feature map at
    5x5, so 8x8, 28x28 and 32x32 inputs all work and the parameter count does not depend on
    the input size.
    """

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 6, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.Conv2d(6, 16, kernel_size=5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2, ceil_mode=True),
            nn.AdaptiveAvgPool2d(5),
        )
        self.classifier = nn.Sequential(
            nn.Linear(16 * 5 * 5, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))  # (N, 400) -> (N, K)


@register_model("lenet")
def lenet(name: str, num_classes: int, in_shape: tuple[int, int, int]) -> nn.Module:
    """LeNet-style CNN, 6-16 channels, ~62k parameters for 10 classes."""
    convs = in_shape[0] * 6 * 25 + 6 + 6 * 16 * 25 + 16
    _check_params(name, convs + 400 * 120 + 120 + 120 * 84 + 84 + 84 * num_classes + num_classes)
    return LeNet(in_shape[0], num_classes)


def _conv_bn_relu(in_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def _kaiming_init(module: nn.Module) -> None:
    # He et al. 2015 init for ReLU convs; BatchNorm starts as the identity.
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class WideCNN(nn.Module):
    """3x3 conv+BN+ReLU stages of 32, 64-64 and 128-128 channels with max pools between them,
    global average pool, dropout, linear head: the strong small teacher for MNIST-sized data
    (~22M multiply-adds per 28x28 image, so it trains on a CPU)."""

    def __init__(self, in_channels: int, num_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.features = nn.Sequential(
            _conv_bn_relu(in_channels, 32),  # one conv at full size: most of the cost is here
            nn.MaxPool2d(2, ceil_mode=True),  # 28 -> 14
            _conv_bn_relu(32, 64),
            _conv_bn_relu(64, 64),
            nn.MaxPool2d(2, ceil_mode=True),  # 14 -> 7
            _conv_bn_relu(64, 128),
            _conv_bn_relu(128, 128),
            nn.AdaptiveAvgPool2d(1),
        )
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(128, num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.features(x).flatten(1)  # (N, 128)
        return self.head(self.dropout(x))  # (N, K)


@register_model("cnn-wide")
def cnn_wide(
    name: str, num_classes: int, in_shape: tuple[int, int, int], *, dropout: float = 0.0
) -> nn.Module:
    """Small wide CNN (32-64-128), ~279k parameters; dropout applies before the head."""
    convs = sum(a * b * 9 + 2 * b for a, b in ((in_shape[0], 32), (32, 64), (64, 64), (64, 128)))
    _check_params(name, convs + 128 * 128 * 9 + 256 + 128 * num_classes + num_classes)
    return WideCNN(in_shape[0], num_classes, dropout=_check_prob(dropout, "dropout"))


class _BasicBlock(nn.Module):
    """Two 3x3 convs with an identity shortcut; option A (He et al. 2016, sec. 4.2): when the
    shape changes the shortcut subsamples and zero-pads channels, so it has no parameters."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.stride = stride
        self.extra_channels = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))  # (N, C_out, ceil(H/s), ceil(W/s))
        shortcut = x[:, :, :: self.stride, :: self.stride] if self.stride > 1 else x
        if self.extra_channels:
            shortcut = F.pad(shortcut, (0, 0, 0, 0, 0, self.extra_channels))
        return F.relu(out + shortcut)


class CifarResNet(nn.Module):
    """ResNet for CIFAR (He et al. 2016, "Deep Residual Learning", sec. 4.2): depth 6n+2,
    a 3x3 stem of 16 channels, three stages of n basic blocks at 16/32/64 channels (strides
    1/2/2), global average pool, linear head."""

    def __init__(self, depth: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, 16, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        stages = []
        channels = 16
        for width, stride in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for i in range(n):
                blocks.append(_BasicBlock(channels, width, stride if i == 0 else 1))
                channels = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.head = nn.Linear(64, num_classes)
        _kaiming_init(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))  # (N, 16, H, W)
        x = self.layer3(self.layer2(self.layer1(x)))  # (N, 64, H/4, W/4)
        return self.head(F.adaptive_avg_pool2d(x, 1).flatten(1))  # (N, K)


@register_model(
    "resnet*",
    examples=("resnet8", "resnet20"),
    description="resnetD (CIFAR ResNet, D = 6n+2: 8, 14, 20, 32, 44, 56, 110)",
)
def resnet(name: str, num_classes: int, in_shape: tuple[int, int, int]) -> nn.Module:
    """CIFAR-style ResNet-D; resnet8 ~78k and resnet20 ~0.27M parameters for 10 classes."""
    match = re.fullmatch(r"resnet([0-9]{1,18})", name)
    depth = int(match.group(1)) if match else 0
    if depth < 8 or (depth - 2) % 6:
        raise KdvizError(
            f"Model name {_short(name)!r} is not valid; CIFAR ResNets have depth 6n+2, e.g. resnet8, resnet20 or resnet56."
        )
    if depth > MAX_LAYERS:
        raise KdvizError(
            f"The model {name!r} is deeper than kdviz's limit of {MAX_LAYERS} layers; use e.g. resnet110."
        )
    _check_params(name, _resnet_params(depth, in_shape[0], num_classes))
    return CifarResNet(depth, in_shape[0], num_classes)


def _resnet_params(depth: int, in_channels: int, num_classes: int) -> int:
    """CifarResNet's exact parameter count, in closed form (no loop over 10**9 blocks)."""
    n = (depth - 2) // 6
    count = in_channels * 16 * 9 + 2 * 16  # stem conv + BN
    channels = 16
    for width in (16, 32, 64):
        block = 2 * width * width * 9 + 4 * width  # two convs and two BNs at full width
        count += (channels - width) * width * 9 + n * block  # the first conv takes `channels`
        channels = width
    return count + 64 * num_classes + num_classes


# Foreign architectures: any torchvision or timm classifier, built without weights (never downloads).


def _set_first_conv_channels(model: nn.Module, in_channels: int) -> nn.Module:
    """Swap the first Conv2d for one taking ``in_channels`` (the 1-channel MNIST recipe)."""
    for path, conv in model.named_modules():
        if isinstance(conv, nn.Conv2d):
            if conv.in_channels == in_channels:
                return model
            if conv.groups != 1:
                raise KdvizError(
                    f"The first convolution of this model is grouped, so kdviz cannot give it "
                    f"{in_channels} input channel(s); use a model that takes {conv.in_channels}."
                )
            new = nn.Conv2d(
                in_channels,
                conv.out_channels,
                conv.kernel_size,
                stride=conv.stride,
                padding=conv.padding,
                dilation=conv.dilation,
                bias=conv.bias is not None,
                padding_mode=conv.padding_mode,
            )
            parent_path, _, child = path.rpartition(".")
            setattr(model.get_submodule(parent_path), child, new)
            return model
    return model


class WeightsOnMeta(TorchFunctionMode):
    """Tensors made by torch.empty / zeros / ones / full / rand* / eye without a device go to
    the meta device; the rest (arange, linspace, tensor, maths) stay on the CPU.

    For builders that compute their layout with torch and read it back, which the plain meta
    device refuses (torchvision's regnets: ``torch.round(...).int().tolist()``); every
    parameter torch.nn makes starts as one of these factories.
    """

    _FACTORIES = frozenset(
        (torch.empty, torch.empty_strided, torch.zeros, torch.ones, torch.full, torch.eye)
        + (torch.rand, torch.randn, torch.randint)
    )

    def __torch_function__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = dict(kwargs or {})
        if func in self._FACTORIES and kwargs.get("device") is None:
            kwargs["device"] = torch.device("meta")
        return func(*args, **kwargs)


def _meta_param_count(build: Callable[[], nn.Module]) -> int | None:
    """Parameters of ``build()``'s model, built on the meta device (shapes only, no memory);
    None when the builder cannot run there at all. The caller's RNG stream is left as it was,
    so the real build draws the same weights as it would without this count."""
    for on_meta in (lambda: torch.device("meta"), WeightsOnMeta):
        try:
            with torch.random.fork_rng(devices=[]), on_meta():
                shell = build()
        except KdvizError:
            raise
        except Exception:  # NotImplementedError: "Cannot copy out of meta tensor", and kin
            continue
        return sum(p.numel() for p in shell.parameters())
    return None


def _bounded_build(name: str, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` once on the meta device to count its parameters, refused over max_params(),
    and only then for real, so a too-large model never allocates its weights."""
    count = _meta_param_count(build)
    if count is not None:
        _check_params(name, count, counted=True)
    model = build()
    if count is None:  # (no such builder is known) counted after all: never kept over the limit
        _check_params(name, sum(p.numel() for p in model.parameters()), counted=True)
    return model


def _few(valid: list[str], name: str) -> str:
    import difflib

    close = difflib.get_close_matches(name, valid, n=5, cutoff=0.5) or valid[:5]
    return ", ".join(close)


def _check_channels(in_channels: Any) -> int:
    if not _is_int(in_channels) or not 1 <= in_channels <= MAX_CHANNELS:
        raise KdvizError(f"in_channels {in_channels!r} is not valid; give 1 to {MAX_CHANNELS}.")
    return int(in_channels)


@register_model(
    "torchvision:*", description="torchvision:NAME (any torchvision classifier, e.g. resnet18)"
)
def torchvision_model(
    name: str, num_classes: int, in_shape: tuple[int, int, int], *, in_channels: int | None = None
) -> nn.Module:
    """torchvision.models.get_model(NAME, weights=None, num_classes=K), first conv set to C channels."""
    import torchvision

    arch = name.partition(":")[2]
    valid = torchvision.models.list_models(module=torchvision.models)  # classifiers only
    if arch not in valid:
        raise KdvizError(
            f"torchvision has no classification model {_short(arch)!r}; use one of "
            f"torchvision.models.list_models(), e.g. {_few(valid, arch)}."
        )
    channels = _check_channels(in_shape[0] if in_channels is None else in_channels)

    def build() -> nn.Module:
        model = torchvision.models.get_model(arch, weights=None, num_classes=num_classes)
        return _set_first_conv_channels(model, channels)

    return _bounded_build(name, build)


@register_model("timm:*", description="timm:NAME (any timm model; pip install kdviz[timm])")
def timm_model(
    name: str, num_classes: int, in_shape: tuple[int, int, int], *, in_channels: int | None = None
) -> nn.Module:
    """timm.create_model(NAME, pretrained=False, num_classes=K, in_chans=C)."""
    try:
        import timm
    except ImportError as err:
        raise KdvizError(
            "timm is not installed; install it with `pip install kdviz[timm]` to use timm:NAME models."
        ) from err
    arch = name.partition(":")[2]
    if not timm.is_model(arch):
        raise KdvizError(
            f"timm has no model {_short(arch)!r}; use one of timm.list_models(), e.g. "
            f"{_few(timm.list_models(), arch)}."
        )
    channels = _check_channels(in_shape[0] if in_channels is None else in_channels)
    kwargs = {"pretrained": False, "num_classes": num_classes, "in_chans": channels}

    def build() -> nn.Module:
        try:  # models with a fixed input size (ViTs) take img_size; the others refuse it
            return timm.create_model(arch, img_size=tuple(in_shape[1:]), **kwargs)
        except TypeError:
            return timm.create_model(arch, **kwargs)

    return _bounded_build(name, build)
