"""LoRA (low-rank adaptation, Hu et al. 2021): fine-tune a frozen model through small rank-r updates.

Each adapted projection keeps its kernel W frozen and learns two factors,
A (fan_in x r, random) and B (r x fan_out, zeros), so that its kernel becomes
``W + scale * reshape(A @ B)`` with ``scale = alpha / rank``. B starts at zero,
so the adapted model starts equal to the base. Every other weight is frozen
too: only A and B train, a few percent of the parameters. After fine-tuning,
`merge` folds the update into W, giving a plain model of the base's
architecture that converts to TFLite like the base (no cost at inference).

Adapters go on plain ``Dense`` layers (``LoraAdapter``) and on the query, key,
value and output projections (``EinsumDense``) inside Keras'
``MultiHeadAttention`` (``LoraMultiHeadAttention``). The control LoRA is
compared against, ``finetune`` (every weight trains), is in
tfcompress.recipes.finetune; the adaptation corpus in tfcompress.tasks.adaptation.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from tfcompress._keras import keras, tf
from tfcompress.recipes.base import Kind, NotApplicable, Recipe, RecipeContext, Transformed, param, register
from tfcompress.recipes.training import TRAINABLE, FinetuneParams, finetune, require_graph, trainable_params

# The projections of MultiHeadAttention, by target name: the attribute holding each EinsumDense.
ATTENTION_PROJECTIONS = {"query": "_query_dense", "key": "_key_dense", "value": "_value_dense",
                         "output": "_output_dense"}  # fmt: skip
# Target names and what they stand for: 'mlp' is every plain Dense layer that does not produce a model
# output, 'head' every one that does.
TARGET_GROUPS = {
    **{name: (name,) for name in ATTENTION_PROJECTIONS},
    "mlp": ("mlp",),
    "head": ("head",),
    "attention": tuple(ATTENTION_PROJECTIONS),
    "all": (*ATTENTION_PROJECTIONS, "mlp", "head"),
}


@dataclasses.dataclass(frozen=True)
class LoraParams(FinetuneParams):
    """Parameters of `lora` (and the fine-tuning ones of FinetuneParams).

    The default, rank 8 on the attention's query and value projections (Hu et
    al.'s choice), trains 3.5% of the default 64-wide transformer's
    parameters. Spreading a smaller rank over more layers adapted that model
    (CPython's documentation -> Python source) further for a similar budget:
    rank 2 on every attention, MLP and head layer (`lora:rank=2:alpha=4:
    targets=all`) trains 4.2%; rank 8 on everything would train 17%.

    Attributes:
      rank: r, the rank of each update A @ B, at least 1.
      alpha: the update's scale is alpha / rank (Hu et al.: keep alpha fixed
        when trying ranks, so the learning rate need not be retuned); above 0.
      targets: which projections get adapters, names joined with '+': 'query',
        'key', 'value', 'output' (of every MultiHeadAttention), 'attention'
        (all four), 'mlp' (every Dense layer that does not produce a model
        output), 'head' (the Dense layers that do), 'all' (all of these).
    """

    rank: int = param(8, "Rank of the lora recipe's adapters.", flag="lora_rank", bounds=(1, None))
    alpha: float = param(16.0, "lora: the update's scale is alpha / rank.", flag="lora_alpha", bounds=(1e-9, None))
    targets: str = param("query+value", "lora: the projections that get adapters, joined with '+'.",
                         flag="lora_targets")  # fmt: skip

    def __post_init__(self):
        super().__post_init__()
        if self.rank < 1:
            raise ValueError(f"rank must be >= 1, got {self.rank}.")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be > 0 (the update's scale is alpha / rank), got {self.alpha}.")
        for name in self.targets.split("+"):
            if name.strip() not in TARGET_GROUPS:
                raise ValueError(
                    f"Unknown LoRA target {name.strip()!r} in targets={self.targets!r}; "
                    + f"join with '+' any of: {', '.join(TARGET_GROUPS)}."
                )

    @property
    def scale(self) -> float:
        """The factor of the update: kernel = W + scale * A @ B."""
        return self.alpha / self.rank

    @property
    def target_set(self) -> frozenset[str]:
        """The targets with the groups ('attention', 'all') expanded."""
        return frozenset(t for name in self.targets.split("+") for t in TARGET_GROUPS[name.strip()])


def _fan_in_axes(layer: keras.layers.Layer) -> int:
    """How many leading kernel axes a Dense or EinsumDense contracts with its input."""
    if type(layer) is keras.layers.Dense:
        return 1
    inputs, output = layer.equation.split("->")
    kernel = inputs.split(",")[1]
    contracted = [axis for axis in kernel if axis not in output]
    if kernel[: len(contracted)] != "".join(contracted):
        raise ValueError(f"EinsumDense {layer.name!r} ({layer.equation}) does not contract its leading kernel axes.")
    return len(contracted)


@keras.utils.register_keras_serializable(package="tfcompress")
class LoraAdapter(keras.layers.Wrapper):
    """A frozen Dense or EinsumDense whose kernel gets a trainable low-rank update.

    Computes the wrapped layer with kernel ``W + (alpha / rank) * reshape(A @ B)``,
    where A is (fan_in, rank) and B is (rank, fan_out), fan_in being the kernel
    axes contracted with the input. Only A and B train.
    """

    def __init__(self, layer: keras.layers.Layer, rank: int, alpha: float, **kwargs):
        if type(layer) not in (keras.layers.Dense, keras.layers.EinsumDense):
            raise ValueError(f"LoraAdapter wraps Dense or EinsumDense layers, got {type(layer).__name__}.")
        super().__init__(layer, **kwargs)
        layer.trainable = False
        self.rank, self.alpha = rank, alpha

    @property
    def scale(self) -> float:
        return self.alpha / self.rank

    def build(self, input_shape):
        if not self.layer.built:
            self.layer.build(input_shape)
        shape = self.layer.kernel.shape
        axes = _fan_in_axes(self.layer)
        fan_in, fan_out = math.prod(shape[:axes]), math.prod(shape[axes:])
        # As in the reference implementation (loralib): A ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)), B = 0.
        uniform = keras.initializers.VarianceScaling(1 / 3, mode="fan_in", distribution="uniform")
        self.lora_a = self.add_weight(name="lora_a", shape=(fan_in, self.rank), initializer=uniform)
        self.lora_b = self.add_weight(name="lora_b", shape=(self.rank, fan_out), initializer="zeros")
        super().build(input_shape)

    def delta(self) -> tf.Tensor:
        """The update scale * A @ B in the kernel's shape."""
        return tf.reshape(self.scale * tf.matmul(self.lora_a, self.lora_b), tf.shape(self.layer.kernel))

    def call(self, inputs):
        layer = self.layer
        kernel = layer.kernel + self.delta()
        if type(layer) is keras.layers.Dense:
            outputs = tf.tensordot(tf.cast(inputs, kernel.dtype), kernel, [[inputs.shape.rank - 1], [0]])
        else:
            outputs = tf.einsum(layer.equation, inputs, kernel)
        if layer.bias is not None:
            outputs += layer.bias
        return layer.activation(outputs) if layer.activation is not None else outputs

    def compute_output_shape(self, input_shape):
        return self.layer.compute_output_shape(input_shape)

    def get_config(self):
        return super().get_config() | {"rank": self.rank, "alpha": self.alpha}

    def merged_weights(self) -> list[np.ndarray]:
        """The wrapped layer's weights with the update folded into the kernel."""
        weights = self.layer.get_weights()
        return [(self.layer.kernel + self.delta()).numpy()] + weights[1:]


@keras.utils.register_keras_serializable(package="tfcompress")
class LoraMultiHeadAttention(keras.layers.MultiHeadAttention):
    """MultiHeadAttention with LoRA adapters on some projections and every base weight frozen.

    Args:
      lora_rank: rank of each update.
      lora_alpha: the update's scale is lora_alpha / lora_rank.
      lora_targets: the projections to adapt, some of 'query', 'key', 'value',
        'output'.
      *args, **kwargs: those of MultiHeadAttention.
    """

    def __init__(
        self, *args, lora_rank: int = 2, lora_alpha: float = 4.0, lora_targets=tuple(ATTENTION_PROJECTIONS), **kwargs
    ):
        super().__init__(*args, **kwargs)
        unknown = set(lora_targets) - set(ATTENTION_PROJECTIONS)
        if unknown:
            raise ValueError(
                f"Unknown attention projections {sorted(unknown)}; choose from {list(ATTENTION_PROJECTIONS)}."
            )
        self.lora_rank, self.lora_alpha = lora_rank, lora_alpha
        self.lora_targets = tuple(t for t in ATTENTION_PROJECTIONS if t in lora_targets)

    def _build_from_signature(self, query, value, key=None):
        # The base class creates the four EinsumDense projections (not yet built); wrap or freeze each.
        super()._build_from_signature(query, value, key)
        for target, attribute in ATTENTION_PROJECTIONS.items():
            dense = getattr(self, attribute)
            if target in self.lora_targets:
                setattr(self, attribute, LoraAdapter(dense, self.lora_rank, self.lora_alpha, name=f"lora_{target}"))
            else:
                dense.trainable = False

    def get_config(self):
        return super().get_config() | {
            "lora_rank": self.lora_rank,
            "lora_alpha": self.lora_alpha,
            "lora_targets": list(self.lora_targets),
        }


def _plan(model: keras.Model, params: LoraParams) -> dict[str, tuple[str, ...]]:
    """Layer name -> what to adapt in it: ('dense',) or the attention projections."""
    targets = params.target_set
    heads = set(model.output_names)  # the layers that produce the model's outputs
    plan = {}
    for layer in model.layers:
        if type(layer) is keras.layers.MultiHeadAttention:
            projections = tuple(t for t in ATTENTION_PROJECTIONS if t in targets)
            if projections:
                plan[layer.name] = projections
        elif type(layer) is keras.layers.Dense and ("head" if layer.name in heads else "mlp") in targets:
            plan[layer.name] = ("dense",)
    return plan


def add_adapters(model: keras.Model, params: LoraParams, seed: int = 0) -> keras.Model:
    """A copy of the model with LoRA adapters on the targeted projections and every base weight frozen.

    Args:
      model: a Sequential or Functional Keras model; it is not changed.
      params: rank, alpha and targets.
      seed: seeds the random initial A factors.

    Raises:
      NotApplicable: the model is subclassed, or no layer matches the targets.
    """
    require_graph(model)
    plan = _plan(model, params)
    if not plan:
        kinds = sorted({type(layer).__name__ for layer in model.layers})
        raise NotApplicable(
            f"no layer matches LoRA targets {params.targets!r} (the model's layers are: {', '.join(kinds)}); "
            + "adapters go on MultiHeadAttention projections (query, key, value, output) and Dense layers "
            + "(mlp, head)."
        )
    keras.utils.set_random_seed(seed)

    def clone(layer):
        config = layer.get_config()
        if layer.name not in plan:
            return layer.__class__.from_config(config)
        if plan[layer.name] == ("dense",):
            return LoraAdapter(keras.layers.Dense.from_config(config), params.rank, params.alpha, name=layer.name)
        return LoraMultiHeadAttention.from_config(
            config | {"lora_rank": params.rank, "lora_alpha": params.alpha, "lora_targets": plan[layer.name]}
        )

    adapted = keras.models.clone_model(model, clone_function=clone)
    for old, new in zip(model.layers, adapted.layers, strict=True):
        if isinstance(new, LoraAdapter):
            new.layer.set_weights(old.get_weights())
        elif isinstance(new, LoraMultiHeadAttention):
            for attribute in ATTENTION_PROJECTIONS.values():
                _unwrap(getattr(new, attribute)).set_weights(getattr(old, attribute).get_weights())
        else:
            new.set_weights(old.get_weights())
            new.trainable = False
    return adapted


def _unwrap(layer: keras.layers.Layer) -> keras.layers.Layer:
    return layer.layer if isinstance(layer, LoraAdapter) else layer


def adapters(model: keras.Model) -> list[tuple[str, LoraAdapter]]:
    """Every LoRA adapter of an adapted model, with a name like 'mlp_up_0' or 'attention_0/query'."""
    found = []
    for layer in model.layers:
        if isinstance(layer, LoraAdapter):
            found.append((layer.name, layer))
        elif isinstance(layer, LoraMultiHeadAttention):
            found += [(f"{layer.name}/{t}", getattr(layer, ATTENTION_PROJECTIONS[t])) for t in layer.lora_targets]
    return found


def merge(adapted: keras.Model, base_model: keras.Model) -> keras.Model:
    """A plain model of the base's architecture whose kernels hold the adapted model's W + scale * A @ B.

    Args:
      adapted: a model from `add_adapters` (fine-tuned or not).
      base_model: the model it was made from; only its architecture is used,
        every weight comes from `adapted`.

    Returns:
      A new model with no adapter layers, computing what `adapted` computes.
    """
    merged = keras.models.clone_model(base_model)
    for layer in merged.layers:
        try:
            source = adapted.get_layer(layer.name)
        except ValueError:
            raise ValueError(f"Layer {layer.name!r} of the base model is not in the adapted model; "
                             + "give the model that add_adapters was called with.") from None  # fmt: skip
        if isinstance(source, LoraAdapter):
            layer.set_weights(source.merged_weights())
        elif isinstance(source, LoraMultiHeadAttention):
            for attribute in ATTENTION_PROJECTIONS.values():
                projection = getattr(source, attribute)
                weights = (
                    projection.merged_weights() if isinstance(projection, LoraAdapter) else projection.get_weights()
                )
                getattr(layer, attribute).set_weights(weights)
        else:
            layer.set_weights(source.get_weights())
    return merged


def lora(model: keras.Model, context: RecipeContext, params: LoraParams) -> Transformed:
    """Adds adapters, fine-tunes only them on the training split, and merges them into the kernels.

    Returns:
      The merged model (the base's architecture and size) and its extras:
      finetune_s, trainable_params (the adapters' weights), trainable_fraction
      (trainable_params / the base model's parameters, as Hu et al. count) and
      lora_layers (the adapted projections).

    Raises:
      NotApplicable: as `add_adapters`.
    """
    adapted = add_adapters(model, params, seed=context.seed)
    trainable = trainable_params(adapted)
    seconds = finetune(adapted, context, params)
    return Transformed(
        merge(adapted, model),
        {
            "finetune_s": seconds,
            "trainable_params": trainable,
            "trainable_fraction": trainable / model.count_params(),
            "lora_layers": [name for name, _ in adapters(adapted)],
        },
    )


register(
    Recipe(
        "lora",
        "LoRA: train rank-r adapters of frozen attention/Dense kernels, then merge them in",
        Kind.TRANSFORM,
        lora,
        LoraParams,
        "rank",
        in_default_study=False,
        columns=(TRAINABLE,),
    )
)
