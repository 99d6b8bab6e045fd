"""Small building blocks shared by the backbone and the heads."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .winograd import conv3x3, pays


class ConvNorm(nn.Conv2d):
    """``Conv2d -> norm -> ReLU`` with the norm stored as ``.norm`` (state-dict keys ``name.weight``,
    ``name.norm.weight`` as in detectron2's layout). Shapes: ``[B, Cin, H, W] -> [B, Cout, H', W']``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        bias: bool = False,
        norm: nn.Module | None = None,
        relu: bool = False,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride=stride, padding=padding, dilation=dilation, bias=bias
        )
        self.norm = norm
        self.relu = relu
        self.winograd = False  # with autograd, Winograd's F(2x2, 3x3) where it pays (``set_winograd``)

    def _conv(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        geometry = (self.stride, self.padding, self.dilation, self.groups)
        if self.winograd and torch.is_grad_enabled() and pays(x, weight, *geometry):
            return conv3x3(x, weight, bias)
        return F.conv2d(x, weight, bias, *geometry)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        affine = getattr(self.norm, "frozen_affine", None)
        if affine is not None and torch.is_grad_enabled():
            # training with a frozen norm: conv(x, W * s) + (b * s + t), i.e. the norm folded into the weights, which
            # saves a full pass over the activation forward and backward (the weight gradient flows through W * s).
            # Without autograd the unfolded arithmetic is kept, as the original computes it.
            scale, shift = affine()
            weight = self.weight * scale.view(-1, 1, 1, 1)
            bias = shift if self.bias is None else self.bias * scale + shift
            x = self._conv(x, weight, bias)
            return F.relu_(x) if self.relu else x
        x = self._conv(x, self.weight, self.bias)
        if self.norm is not None:
            x = self.norm(x)
        # in place: x is a fresh tensor here, and ReLU's backward needs only its output
        return F.relu_(x) if self.relu else x


def set_winograd(model: nn.Module, on: bool = True) -> int:
    """Let every ``ConvNorm`` of ``model`` train its wide 3x3 convolutions by Winograd's F(2x2, 3x3) where it pays
    (``modeling.winograd.pays``; the forward without autograd keeps the direct kernel), and the mask features'
    convolution of a pixel decoder, which training runs inside the mask product (``mask_product.layer_mask_logits``
    reads the same flag). Returns how many were set."""
    layers: list[nn.Module] = [m for m in model.modules() if isinstance(m, ConvNorm)]
    layers += [m for name, m in model.named_modules() if name.endswith("pixel_decoder.mask_features")]
    for m in layers:
        m.winograd = on
    return len(layers)


def c2_xavier_fill(module: nn.Conv2d | nn.Linear) -> None:
    """Caffe2 "XavierFill" as detectron2 uses it: kaiming_uniform_(a=1), bias 0."""
    nn.init.kaiming_uniform_(module.weight, a=1)
    if module.bias is not None:
        nn.init.zeros_(module.bias)


def c2_msra_fill(module: nn.Conv2d | nn.Linear) -> None:
    """Caffe2 "MSRAFill": kaiming_normal_(fan_out, relu), bias 0."""
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    if module.bias is not None:
        nn.init.zeros_(module.bias)


class MLP(nn.Module):
    """``num_layers`` Linear layers with ReLU between them (keys ``layers.{i}.weight``).

    ``[..., Cin] -> [..., Cout]``.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        dims = [in_dim] + [hidden_dim] * (num_layers - 1)
        outs = [hidden_dim] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(i, o) for i, o in zip(dims, outs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = F.relu(x)
        return x
