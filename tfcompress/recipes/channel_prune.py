"""Channel (filter) pruning: remove whole Conv2D filters and rebuild a genuinely narrower model.

Unlike TFMOT's magnitude pruning, which leaves zeros in kernels of the same
shape, this removes filters: each Conv2D keeps ``keep_fraction`` of its
filters (the highest L1 norms, or the largest |gamma| of the BatchNormalization
right after it), the model is rebuilt from its layers' configs with fewer
``filters``, and the kept weights are copied. Every layer that reads a pruned
tensor has its input channels sliced to match: BatchNormalization,
DepthwiseConv2D (which follows its input's channels), the next Conv2D, and a
Dense after GlobalAveragePooling2D / GlobalMaxPooling2D (rows sliced directly)
or after Flatten (rows ``p * C + c`` of every spatial position ``p``, the
channels-last order of Flatten).

Channel spaces that meet in an Add must stay equal, so the convs producing
them form one group (union-find over channel spaces) that shares one score
(the sum of its members' scores) and one set of kept channels. A group that
holds a channel space no conv produces (the model input, a Dense output) or a
model output, or that a channel-mixing op reads (a softmax over channels), is
not pruned. With ``keep_fraction=1`` the rebuilt model computes exactly what
the original does.

Fewer filters means fewer multiply-adds, so unlike sparsity this speeds up
CPU inference (see TF-STACK.md: 50% of filters cut FLOPs ~4x and latency
3.3-3.9x on the MNIST CNN). Supported models are Sequential or Functional
models made of the layers in ``SUPPORTED_LAYERS``; anything else is
NotApplicable with the layer named.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from tfcompress import models
from tfcompress._keras import keras
from tfcompress.measure.macs import keras_macs
from tfcompress.recipes.base import Column, Kind, NotApplicable, Recipe, RecipeContext, Transformed, param, register
from tfcompress.recipes.training import FinetuneParams, finetune

CRITERIA = ("l1", "bn_gamma")
KEEP_FRACTION_HELP = "Fraction of each conv's filters that channel_prune keeps (and distill's default student)."

_L = keras.layers
# Layers whose output has their input's channels, each computed from its own channel (pooling, padding, activations).
_PER_CHANNEL = (
    _L.ReLU,
    _L.LeakyReLU,
    _L.ELU,
    _L.Activation,
    _L.Dropout,
    _L.SpatialDropout2D,
    _L.MaxPooling2D,
    _L.AveragePooling2D,
    _L.ZeroPadding2D,
)
_GLOBAL_POOLING = (_L.GlobalAveragePooling2D, _L.GlobalMaxPooling2D)
SUPPORTED_LAYERS = (
    _L.InputLayer,
    _L.Conv2D,
    _L.DepthwiseConv2D,
    _L.BatchNormalization,
    *_PER_CHANNEL,
    _L.Add,
    _L.Flatten,
    *_GLOBAL_POOLING,
    _L.Dense,
    _L.Softmax,
)
# Activations that mix the channels they act on: the channels they read cannot be removed.
_CHANNEL_MIXING = ("softmax", "log_softmax")

# A tensor as the analysis sees it: (channel space id, spatial positions folded into its last axis).
# A feature map or a pooled vector has positions 1; Flatten of an HxWxC map has positions H*W.
_Tensor = tuple[int, int]


@dataclasses.dataclass(frozen=True)
class ChannelPruneParams(FinetuneParams):
    """Parameters of `channel_prune` (and the fine-tuning ones of FinetuneParams).

    Attributes:
      keep_fraction: the fraction of each Conv2D's filters kept, in (0, 1];
        at least one filter always stays.
      channel_criterion: 'l1' ranks filters by the L1 norm of their kernel;
        'bn_gamma' by |gamma| of the BatchNormalization right after the conv
        (a group with a conv that has none falls back to 'l1').
    """

    keep_fraction: float = param(0.5, KEEP_FRACTION_HELP, bounds=(1e-6, 1.0))
    channel_criterion: str = param("l1", "How channel_prune ranks filters: kernel L1 norm or BN |gamma|.",
                                   choices=CRITERIA)  # fmt: skip

    def __post_init__(self):
        super().__post_init__()
        _check(self.keep_fraction, self.channel_criterion)


def _check(keep_fraction: float, criterion: str) -> None:
    if not 0 < keep_fraction <= 1:
        raise ValueError(f"keep_fraction must be in (0, 1], got {keep_fraction}.")
    if criterion not in CRITERIA:
        raise ValueError(f"channel_criterion must be one of {', '.join(CRITERIA)}, got {criterion!r}.")


class _Plan:
    """The channel spaces of a model, how they are tied together, and which weights slice along which."""

    def __init__(self):
        self.sizes: list[int] = []
        self.parent: list[int] = []
        self.fixed: set[int] = set()
        self.conv_out: dict[str, int] = {}  # Conv2D name -> the space of its output channels
        self.bn_after: dict[str, keras.layers.Layer] = {}  # Conv2D name -> the BatchNormalization reading it
        self.slices: dict[str, list[tuple[int, int, _Tensor]]] = {}  # layer -> (weight index, axis, tensor)
        self.kept: dict[int, np.ndarray] = {}  # group root -> kept channel indices (groups being pruned)

    def new(self, channels: int, fixed: bool = False) -> _Tensor:
        sid = len(self.sizes)
        self.sizes.append(int(channels))
        self.parent.append(sid)
        if fixed:
            self.fixed.add(sid)
        return sid, 1

    def root(self, sid: int) -> int:
        while self.parent[sid] != sid:
            self.parent[sid] = self.parent[self.parent[sid]]
            sid = self.parent[sid]
        return sid

    def tie(self, a: int, b: int) -> None:
        self.parent[self.root(a)] = self.root(b)

    def fix(self, tensor: _Tensor) -> None:
        self.fixed.add(tensor[0])

    def indices(self, tensor: _Tensor) -> np.ndarray | None:
        """The kept rows of a tensor's last axis, or None when all of them stay."""
        sid, positions = tensor
        kept = self.kept.get(self.root(sid))
        if kept is None:
            return None
        channels = self.sizes[self.root(sid)]
        return (np.arange(positions)[:, None] * channels + kept[None, :]).ravel()


def _unsupported(layer, why: str | None = None) -> NotApplicable:
    if why is None:
        names = ", ".join(sorted({cls.__name__ for cls in SUPPORTED_LAYERS}))
        why = f"supported: {names}"
    return NotApplicable(f"channel_prune does not support layer {layer.name!r} ({type(layer).__name__}); {why}.")


def _graph(model: keras.Model) -> tuple[list[tuple[keras.layers.Layer, list[str]]], dict[str, int], list[str]]:
    """The model's layers in topological order with the names of the layers feeding each.

    Returns (layer, source names) pairs, the input names with their channel
    counts, and the names of the layers whose outputs are the model's outputs.
    """
    if models.is_subclassed(model):
        raise NotApplicable(
            f"{type(model).__name__} is a subclassed model; channel_prune needs a Sequential or Functional model."
        )
    if not model.inputs:
        raise NotApplicable(f"model {model.name!r} is not built; give it an input shape.")
    if isinstance(model, keras.Sequential):
        nodes, previous = [], "__input__"
        for layer in model.layers:
            nodes.append((layer, [previous]))
            previous = layer.name
        return nodes, {"__input__": int(model.inputs[0].shape[-1])}, [previous]
    config = model.get_config()
    inputs = {name: int(t.shape[-1]) for (name, _, _), t in zip(config["input_layers"], model.inputs, strict=True)}
    nodes = []
    for entry in config["layers"]:
        layer = model.get_layer(entry["name"])
        if type(layer) not in SUPPORTED_LAYERS:
            raise _unsupported(layer)
        if len(entry["inbound_nodes"]) > 1:
            raise _unsupported(layer, f"it is shared (called {len(entry['inbound_nodes'])} times)")
        if entry["name"] not in inputs:
            nodes.append((layer, [source[0] for source in entry["inbound_nodes"][0]]))
    return _sorted(nodes, set(inputs)), inputs, [name for name, _, _ in config["output_layers"]]


def _sorted(nodes, ready: set[str]):
    order, pending = [], list(nodes)
    while pending:
        rest = [(layer, sources) for layer, sources in pending if not set(sources) <= ready]
        if len(rest) == len(pending):
            raise NotApplicable(f"cannot order the layers {[layer.name for layer, _ in rest]}.")
        for layer, sources in pending:
            if set(sources) <= ready:
                order.append((layer, sources))
                ready.add(layer.name)
        pending = rest
    return order


def _channels_last(layer) -> None:
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        raise _unsupported(layer, "channel_prune needs channels_last data")


def _visit(plan: _Plan, layer, inputs: list[_Tensor], sources: list) -> _Tensor:
    """Records what a layer does to channels; returns its output tensor."""
    cls, config = type(layer), layer.get_config()
    if cls not in SUPPORTED_LAYERS:
        raise _unsupported(layer)
    _channels_last(layer)
    x = inputs[0]
    if cls is _L.Conv2D:
        if config.get("groups", 1) != 1:
            raise _unsupported(layer, f"grouped convolutions (groups={config['groups']}) are not supported")
        out = plan.new(config["filters"], fixed=config["activation"] in _CHANNEL_MIXING)
        plan.conv_out[layer.name] = out[0]
        plan.slices[layer.name] = [(0, 2, x), (0, 3, out)] + ([(1, 0, out)] if config["use_bias"] else [])
        return out
    if cls is _L.DepthwiseConv2D:
        if config["depth_multiplier"] != 1:
            raise _unsupported(layer, f"only depth_multiplier 1 is supported, got {config['depth_multiplier']}")
        plan.slices[layer.name] = [(0, 2, x)] + ([(1, 0, x)] if config["use_bias"] else [])
        return x
    if cls is _L.BatchNormalization:
        rank = len(layer.input_shape)
        axes = [a % rank for a in np.atleast_1d(config["axis"]).tolist()]
        if axes != [rank - 1]:
            raise _unsupported(layer, f"only normalization over the last axis is supported, got axis {config['axis']}")
        plan.slices[layer.name] = [(i, 0, x) for i in range(len(layer.weights))]
        if type(sources[0]) is _L.Conv2D and config["scale"]:
            plan.bn_after[sources[0].name] = layer
        return x
    if cls is _L.Add:
        if len({t[1] for t in inputs}) > 1:
            raise _unsupported(layer, "its inputs mix flattened and unflattened tensors")
        for t in inputs[1:]:
            plan.tie(t[0], x[0])
        return x
    if cls is _L.Flatten:
        return x[0], x[1] * math.prod(layer.input_shape[1:-1])
    if cls is _L.Dense:
        plan.slices[layer.name] = [(0, 0, x)]
        return plan.new(config["units"], fixed=True)
    if cls is _L.Softmax or config.get("activation") in _CHANNEL_MIXING:
        plan.fix(x)
    if cls is _L.Dropout and config.get("noise_shape") is not None:
        plan.fix(x)  # a noise shape may name the channel count
    if cls in _GLOBAL_POOLING or cls in _PER_CHANNEL or cls is _L.Softmax:
        return x
    raise _unsupported(layer)


def _analyze(model: keras.Model) -> _Plan:
    nodes, inputs, outputs = _graph(model)
    plan = _Plan()
    tensors = {name: plan.new(channels, fixed=True) for name, channels in inputs.items()}
    by_name = {layer.name: layer for layer, _ in nodes}
    for layer, sources in nodes:
        tensors[layer.name] = _visit(plan, layer, [tensors[s] for s in sources], [by_name.get(s) for s in sources])
    for name in outputs:
        plan.fix(tensors[name])
    return plan


def _scores(plan: _Plan, model: keras.Model, convs: list[str], criterion: str) -> np.ndarray:
    if criterion == "bn_gamma" and all(name in plan.bn_after for name in convs):
        return sum(np.abs(plan.bn_after[name].gamma.numpy()) for name in convs)
    return sum(np.abs(model.get_layer(name).get_weights()[0]).sum(axis=(0, 1, 2)) for name in convs)


def _choose(plan: _Plan, model: keras.Model, keep_fraction: float, criterion: str) -> None:
    groups: dict[int, list[str]] = {}
    for name, sid in plan.conv_out.items():
        groups.setdefault(plan.root(sid), []).append(name)
    fixed_roots = {plan.root(sid) for sid in plan.fixed}
    for root, convs in groups.items():
        if root in fixed_roots:
            continue
        channels = plan.sizes[root]
        keep = max(1, int(round(channels * keep_fraction)))
        order = np.argsort(-_scores(plan, model, convs, criterion), kind="stable")  # ties: lower index first
        plan.kept[root] = np.sort(order[:keep])
    if not plan.kept:
        raise NotApplicable(
            "channel_prune found no Conv2D whose filters can be removed (none, or each feeds a model output, "
            + "the model input's channels through an Add, or a softmax over channels)."
        )


def prune_channels(model: keras.Model, keep_fraction: float, criterion: str = "l1") -> keras.Model:
    """A narrower copy of the model keeping ``keep_fraction`` of each Conv2D's filters; the input is untouched.

    Args:
      model: a Sequential or Functional model of SUPPORTED_LAYERS.
      keep_fraction: in (0, 1]; each conv (or Add-tied group of convs) keeps
        max(1, round(filters * keep_fraction)) filters.
      criterion: 'l1' (kernel L1 norm) or 'bn_gamma' (|gamma| of the
        BatchNormalization right after each conv; groups whose convs lack one
        use 'l1').

    Returns:
      A new model, not compiled, whose kept filters compute exactly what they
      did in the original (before any fine-tuning).

    Raises:
      ValueError: keep_fraction or criterion out of range.
      NotApplicable: an unsupported or shared layer, or nothing to prune.
    """
    _check(keep_fraction, criterion)
    plan = _analyze(model)
    _choose(plan, model, keep_fraction, criterion)

    def clone(layer):
        config = layer.get_config()
        sid = plan.conv_out.get(layer.name)
        if sid is not None and plan.root(sid) in plan.kept:
            config["filters"] = len(plan.kept[plan.root(sid)])
        return layer.__class__.from_config(config)

    new = keras.models.clone_model(model, clone_function=clone)
    for layer in model.layers:
        weights = layer.get_weights()
        for index, axis, tensor in plan.slices.get(layer.name, []):
            rows = plan.indices(tensor)
            if rows is not None:
                weights[index] = np.take(weights[index], rows, axis=axis)
        new.get_layer(layer.name).set_weights(weights)
    return new


def conv_filters(model: keras.Model) -> dict[str, int]:
    """The number of filters of each Conv2D, by layer name."""
    return {layer.name: int(layer.filters) for layer in model.layers if type(layer) is _L.Conv2D}


def filter_widths(original: keras.Model, pruned: keras.Model) -> dict[str, list[int]]:
    """Each Conv2D's [filters before, filters after] pruning, by layer name."""
    after = conv_filters(pruned)
    return {name: [before, after[name]] for name, before in conv_filters(original).items()}


def channel_prune(model: keras.Model, context: RecipeContext, params: ChannelPruneParams) -> Transformed:
    """Removes filters (see prune_channels), then fine-tunes the narrower model."""
    pruned = prune_channels(model, params.keep_fraction, params.channel_criterion)
    seconds = finetune(pruned, context, params)
    widths = filter_widths(model, pruned).values()
    extras = {
        "finetune_s": seconds,
        "kept_filters": sum(after for _, after in widths) / sum(before for before, _ in widths),
        "macs_fraction": keras_macs(pruned) / keras_macs(model),
        # "params" replaces the baseline's count in the row (and so bytes_per_param).
        "params": int(pruned.count_params()),
    }
    return Transformed(pruned, extras)


register(
    Recipe(
        "channel_prune",
        "filter pruning: remove the lowest-L1 Conv2D filters, rebuild narrower, fine-tune",
        Kind.TRANSFORM,
        channel_prune,
        ChannelPruneParams,
        "keep_fraction",
        columns=(Column("kept_filters", "filters kept", ".3f"),),
    )
)
