r"""Which layers DoPr preconditions, and how: a registry from module type to an adapter.

AP is defined for a linear map :math:`y = \tilde W \tilde z` with :math:`\tilde z = [z; 1]`: record the
second moment :math:`\tilde\Sigma` of the rows :math:`\tilde z`, and multiply the gradient
:math:`\tilde G = [G\ g]` from the right by :math:`(\tilde\Sigma + \lambda I)^{-1}`
(``activation.py``). An adapter says what that means for one kind of layer:

- ``rows(inputs, output)``: the rows :math:`z` (n, ``factor_dim``) whose second moment is recorded,
  from the module's first forward argument (and its output, for shapes). The homogeneous 1 is added
  by the statistics, not here.
- ``gradient_matrix(weight_grad, bias_grad)``: the gradient as the matrix :math:`G` (m, ``factor_dim``)
  that AP multiplies from the right, and its bias column (m,) (``None`` without a trained bias).
- ``parameter_update(update, bias_update, bias_grad)``: the preconditioned matrix back in the shapes of
  the weight and the bias (``bias_grad`` is the raw bias gradient, for adapters whose bias column is
  derived from it).
- ``factor_dim``, ``form`` (shown in the coverage table, ``""`` for none), ``kind`` (the summary's
  "N kind layers hooked") and ``dim_name`` (what ``factor_dim`` counts, in the note of a layer above
  ``max_factor_dim``).

``ADAPTERS`` maps a module type to a builder ``(module, options) -> adapter | str``; a string is the
reason the layer gets the raw gradient (shown in the coverage table). The module's parameters are
``weight`` and, optionally, ``bias`` (one entry per output row of the matrix). A module is looked up by its
type, then its base classes (subclasses of ``nn.Linear`` are covered as linear layers). Modules of no
registered type (norms, embeddings, ``nn.Conv3d``, ...) give their parameters to the base optimizer
on the raw gradient. To cover a layer type of your own, register a builder before building DoPr::

    from dopr_robot.optim.adapters import ADAPTERS

    class ScaledLinearAdapter:  # a layer y = s * (W z + b) with a fixed scale s: AP as for nn.Linear
        kind, form, dim_name = "linear", "", "input"

        def __init__(self, module):
            self.factor_dim = module.in_features

        def rows(self, inputs, output):
            return inputs  # leading axes are folded into the batch

        def gradient_matrix(self, weight_grad, bias_grad):
            return weight_grad, bias_grad

        def parameter_update(self, update, bias_update, bias_grad):
            return update, bias_update

    ADAPTERS[ScaledLinear] = lambda module, options: ScaledLinearAdapter(module)

Convolutions (``nn.Conv1d``, ``nn.Conv2d``, ``nn.ConvTranspose1d``) come in two forms, both exact AP
steps for an input statistic that transforms as the invariance principle asks (an invertible mix
:math:`T` of the input channels, weights mixed by :math:`T^{-1}`, leaves the updated outputs
unchanged):

- ``unfold`` (K-FAC for convolutions, Grosse & Martens 2016): one row per output location, the
  unfolded input patch (c_in·k, zero padding included), so the conv is the linear layer
  :math:`y = W_{(c_{out},\,c_{in}k)} z_{patch} + b` at every location and AP is the linear one on it.
  A ``ConvTranspose1d`` is unfolded as the equivalent convolution (zeros inserted between inputs,
  flipped kernel).
- ``channel``: one row per input position, the c_in channels; the same :math:`(\tilde\Sigma + \lambda I)^{-1}`
  multiplies every kernel tap :math:`[G_k\ g]` (the gradient viewed as (c_out·k, c_in)). That is the exact
  AP for patches whose taps are independent draws of one channel distribution with mean :math:`\mu`;
  its bias part is :math:`g - \sum_k M_k \mu`, computed as :math:`\sum_k m_k - (k-1) g` from the per-tap
  bias parts :math:`m_k = g - M_k \mu` (the same as a linear layer's for a 1-tap kernel). The factor is
  c_in wide, whatever the kernel size.

Grouped convolutions (``groups > 1``) get the raw gradient, with that reason in the coverage table.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol

import torch.nn.functional as F
from torch import Tensor, nn

CONV_FORMS = ("channel", "unfold")


@dataclass(frozen=True)
class AdapterOptions:
    """The DoPr options an adapter builder may read."""

    conv_form: str = "channel"  # one of CONV_FORMS (why this default: DoPr's docstring)
    max_factor_dim: int = 4096  # wider factors (without the homogeneous coordinate): raw gradient


class LayerAdapter(Protocol):
    """What DoPr asks of an adapter (the module docstring says what each member means)."""

    kind: str
    form: str
    dim_name: str
    factor_dim: int

    def rows(self, inputs: Tensor, output: Tensor) -> Tensor: ...

    def gradient_matrix(self, weight_grad: Tensor, bias_grad: Tensor | None) -> tuple[Tensor, Tensor | None]: ...

    def parameter_update(self, update: Tensor, bias_update: Tensor | None,
                         bias_grad: Tensor | None) -> tuple[Tensor, Tensor | None]: ...


class LinearAdapter:
    """``nn.Linear``: the input's last axis are the features, leading axes (batch, tokens) are rows."""

    kind, form, dim_name = "linear", "", "input"

    def __init__(self, module: nn.Linear):
        self.factor_dim = module.in_features

    def rows(self, inputs: Tensor, output: Tensor) -> Tensor:
        return inputs  # InputSums folds the leading axes

    def gradient_matrix(self, weight_grad: Tensor, bias_grad: Tensor | None) -> tuple[Tensor, Tensor | None]:
        return weight_grad, bias_grad

    def parameter_update(self, update: Tensor, bias_update: Tensor | None,
                         bias_grad: Tensor | None) -> tuple[Tensor, Tensor | None]:
        return update, bias_update


class _Conv:
    """Shapes of a convolution (or transposed convolution) shared by both forms."""

    kind = "conv"

    def __init__(self, module: nn.modules.conv._ConvNd):
        self.transposed = module.transposed
        self.c_in, self.c_out = module.in_channels, module.out_channels
        self.kernel = tuple(module.kernel_size)
        self.taps = math.prod(self.kernel)

    def _batched(self, inputs: Tensor) -> Tensor:
        """(B, C, *spatial); an unbatched input (C, *spatial) becomes a batch of one."""
        return inputs.unsqueeze(0) if inputs.dim() == len(self.kernel) + 1 else inputs


class ConvChannelAdapter(_Conv):
    """The channel form: Σ over input positions (c_in wide), applied to every kernel tap."""

    form, dim_name = "channel", "channels"

    def __init__(self, module: nn.modules.conv._ConvNd):
        super().__init__(module)
        self.factor_dim = self.c_in

    def rows(self, inputs: Tensor, output: Tensor) -> Tensor:
        return self._batched(inputs).movedim(1, -1).reshape(-1, self.c_in)

    def gradient_matrix(self, weight_grad: Tensor, bias_grad: Tensor | None) -> tuple[Tensor, Tensor | None]:
        # Rows (output channel, tap): weight (c_out, c_in, *k), transposed (c_in, c_out, *k).
        taps_last = weight_grad.movedim(0 if self.transposed else 1, -1)
        bias = None if bias_grad is None else bias_grad.repeat_interleave(self.taps)
        return taps_last.reshape(-1, self.c_in), bias

    def parameter_update(self, update: Tensor, bias_update: Tensor | None,
                         bias_grad: Tensor | None) -> tuple[Tensor, Tensor | None]:
        weight = update.view(self.c_out, *self.kernel, self.c_in).movedim(-1, 0 if self.transposed else 1)
        if bias_update is None:
            return weight.contiguous(), None
        # The bias of the independent-taps patch model: g - sum_k M_k mu = sum_k m_k - (k - 1) g.
        bias = bias_update.view(self.c_out, self.taps).sum(dim=1).sub_(bias_grad, alpha=self.taps - 1)
        return weight.contiguous(), bias


class ConvUnfoldAdapter(_Conv):
    """The unfold form: one row per output location, the unfolded input patch (c_in·k wide)."""

    form, dim_name = "unfold", "unfolded input"

    def __init__(self, module: nn.modules.conv._ConvNd):
        super().__init__(module)
        self.factor_dim = self.c_in * self.taps
        self.dilation, self.stride = tuple(module.dilation), tuple(module.stride)
        self.weight_shape = tuple(module.weight.shape)
        if self.transposed:
            self.padding = tuple(module.padding)
        elif module.padding_mode != "zeros" or isinstance(module.padding, str):
            # "same", or reflect/replicate/circular: pad as the module's own forward does, then unfold.
            # (_reversed_padding_repeated_twice is the amount torch's conv forward pads by, per side.)
            self.pre_pad = (list(module._reversed_padding_repeated_twice),
                            "constant" if module.padding_mode == "zeros" else module.padding_mode)
            self.padding = (0,) * len(self.kernel)
        else:
            self.pre_pad = None
            self.padding = tuple(module.padding)

    def rows(self, inputs: Tensor, output: Tensor) -> Tensor:
        x = self._batched(inputs)
        if self.transposed:
            patches = self._transposed_patches(x, output.shape[-1])
        else:
            if self.pre_pad is not None:
                x = F.pad(x, self.pre_pad[0], mode=self.pre_pad[1])
            patches = _unfold(x, self.kernel, self.dilation, self.padding, self.stride)
        return patches.transpose(1, 2).reshape(-1, self.factor_dim)

    def _transposed_patches(self, x: Tensor, length: int) -> Tensor:
        """A transposed conv is the conv with the flipped kernel over its input with ``stride - 1`` zeros
        between samples, padded by ``dilation (k - 1) - padding`` (negative: cropped); the right side
        takes what the output length adds (``output_padding``, or an ``output_size`` given to forward)."""
        (stride,), (dilation,), (padding,), (kernel,) = self.stride, self.dilation, self.padding, self.kernel
        if stride > 1:
            spread = x.new_zeros(*x.shape[:-1], (x.shape[-1] - 1) * stride + 1)
            spread[..., ::stride] = x
            x = spread
        left = dilation * (kernel - 1) - padding
        right = length + dilation * (kernel - 1) - x.shape[-1] - left
        return _unfold(F.pad(x, (left, right)), self.kernel, self.dilation, (0,), (1,))

    def gradient_matrix(self, weight_grad: Tensor, bias_grad: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if self.transposed:  # (c_in, c_out, k) -> the equivalent conv's (c_out, c_in, k), taps flipped
            weight_grad = weight_grad.flip(-1).transpose(0, 1)
        return weight_grad.reshape(self.c_out, self.factor_dim), bias_grad

    def parameter_update(self, update: Tensor, bias_update: Tensor | None,
                         bias_grad: Tensor | None) -> tuple[Tensor, Tensor | None]:
        if self.transposed:
            return update.view(self.c_out, self.c_in, -1).transpose(0, 1).flip(-1).contiguous(), bias_update
        return update.view(self.weight_shape), bias_update


def _unfold(x: Tensor, kernel: tuple, dilation: tuple, padding: tuple, stride: tuple) -> Tensor:
    """``F.unfold`` (B, C·k, L) for 2-D inputs, and for 1-D ones through a (B, C, 1, L) view."""
    if len(kernel) == 2:
        return F.unfold(x, kernel, dilation=dilation, padding=padding, stride=stride)
    return F.unfold(x.unsqueeze(2), (1, kernel[0]), dilation=(1, dilation[0]), padding=(0, padding[0]),
                    stride=(1, stride[0]))


CONV_ADAPTERS: dict[str, Callable[[nn.Module], LayerAdapter]] = {
    "unfold": ConvUnfoldAdapter,
    "channel": ConvChannelAdapter,
}


def conv_adapter(module: nn.modules.conv._ConvNd, options: AdapterOptions) -> LayerAdapter | str:
    if module.groups > 1:
        return f"groups={module.groups} not covered"
    return CONV_ADAPTERS[options.conv_form](module)


AdapterBuilder = Callable[[nn.Module, AdapterOptions], "LayerAdapter | str"]

# Module type -> builder. Looked up along the module's type's MRO (subclasses are covered).
ADAPTERS: dict[type[nn.Module], AdapterBuilder] = {
    nn.Linear: lambda module, options: LinearAdapter(module),
    nn.Conv1d: conv_adapter,
    nn.Conv2d: conv_adapter,
    nn.ConvTranspose1d: conv_adapter,
}


def adapter_for(module: nn.Module, options: AdapterOptions) -> LayerAdapter | str | None:
    """The adapter of ``module``; a string: the reason it gets the raw gradient; ``None``: no registered
    type (its parameters go to the base optimizer)."""
    builder = next((ADAPTERS[cls] for cls in type(module).__mro__ if cls in ADAPTERS), None)
    if builder is None:
        return None
    adapter = builder(module, options)
    if isinstance(adapter, str) or adapter.factor_dim <= options.max_factor_dim:
        return adapter
    return f"{adapter.dim_name} {adapter.factor_dim} > max_factor_dim {options.max_factor_dim}"
