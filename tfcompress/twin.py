"""Keras 3 models rebuilt as tf_keras ("twin") models, so that TFMOT (tf_keras only) can prune and quantize them.

Each layer is rebuilt from its translated config, the graph is rewired from the
Keras 3 model's nodes (names kept) and the weights are copied; a plugin gives its
own Keras 3 layers a twin with ``register_twin``::

    twin = build_twin(keras3_model)
    check_twin(keras3_model, twin, x[:32])  # raises TwinError naming the first layer that differs
"""

from __future__ import annotations

import collections
import functools
import inspect
import sys

import numpy as np

from tfcompress._keras import keras, tf

# Keras 3 registered name ("my_pkg>MyLayer") -> the tf_keras layer class that mirrors it.
_TWINS: dict[str, type] = {}

# What tf_keras' base Layer takes through **kwargs besides its named arguments.
_BASE_KWARGS = {"input_dim", "input_shape", "batch_input_shape", "batch_size", "weights", "activity_regularizer"}
_BASE_KWARGS |= {"autocast", "implementation"}


class TwinError(ValueError):
    """A Keras 3 model that has no faithful tf_keras twin; the message names the layer and the option or reason."""


def _keras3():
    """Keras 3 itself, imported only once a Keras 3 model is at hand."""
    import keras as keras3

    return keras3


def is_keras3(model) -> bool:
    """Whether ``model`` is a Keras 3 ``keras.Model`` (not tf_keras); never imports Keras 3 itself."""
    keras3 = sys.modules.get("keras")  # no Keras 3 model exists unless Keras 3 was imported
    return keras3 is not None and isinstance(model, getattr(keras3, "Model", ()))


def register_twin(keras3_layer: type | str, tf_keras_class: type) -> None:
    """Gives a custom Keras 3 layer the tf_keras class that mirrors it: same config keys, weights and order.

    Args:
      keras3_layer: the Keras 3 layer class, or its registered name as
        ``keras.saving.get_registered_name`` gives it (``"my_pkg>MyLayer"``).
      tf_keras_class: a ``tf_keras.layers.Layer`` subclass.

    Raises:
      TypeError: ``tf_keras_class`` is not a tf_keras layer class.
    """
    if not (isinstance(tf_keras_class, type) and issubclass(tf_keras_class, keras.layers.Layer)):
        raise TypeError(f"register_twin needs a tf_keras.layers.Layer subclass, not {tf_keras_class!r}.")
    name = keras3_layer if isinstance(keras3_layer, str) else _keras3().saving.get_registered_name(keras3_layer)
    _TWINS[name] = tf_keras_class


def build_twin(model) -> keras.Model:
    """Rebuilds a Keras 3 Sequential or Functional model as an equivalent tf_keras model.

    Layers keep their names, Sequential stays Sequential, nested models are rebuilt in turn. Bare ops
    (``x + 3.0``, ``x * c``) become Rescaling layers, on two tensors Add, Subtract or Multiply layers.

    Raises:
      TwinError: the model is not Keras 3, is subclassed, or has a layer, option,
        activation or op with no faithful tf_keras form (the message names it).
    """
    if not is_keras3(model):
        raise TwinError(f"{model!r} is not a Keras 3 model; a tf_keras model needs no twin.")
    custom = {cls.__name__: cls for cls in _TWINS.values()}  # for layers nested in configs (wrappers)
    with keras.utils.custom_object_scope(custom):
        return _twin(model)


def check_twin(original, twin, x, atol: float = 1e-5) -> float:
    """Runs both models in inference mode on the batch ``x``; returns the largest output difference.

    Raises:
      TwinError: the outputs differ by more than ``atol``; the message names the
        first layer, in graph order, whose output differs from its same-named
        twin's by more than ``atol``, and by how much.
    """
    difference = _max_difference(original(x, training=False), twin(x, training=False))
    if difference <= atol:
        return difference
    for name, layer_difference in _layer_differences(original, twin, x):
        if not layer_difference <= atol:  # NaN counts as a difference
            raise TwinError(
                f"layer '{name}' differs from its twin by {layer_difference:.3g} (atol {atol:g}), the first layer "
                + f"in graph order to differ; the outputs differ by {difference:.3g}."
            )
    raise TwinError(f"model '{original.name}' differs from its twin by {difference:.3g} (atol {atol:g}).")


def _where(layer) -> str:
    return f"layer '{layer.name}' ({type(layer).__name__})"


def _twin(layer):
    """The twin of a Keras 3 model or layer (for a layer, not yet built nor given its weights)."""
    from keras.src.models.functional import Functional  # Keras 3 exports no name for the class

    keras3 = _keras3()
    if not isinstance(layer, keras3.Model):
        return _twin_layer(layer)
    if isinstance(layer, keras3.Sequential) and type(layer).call is keras3.Sequential.call:
        return _twin_sequential(layer)
    if isinstance(layer, Functional) and type(layer).call is Functional.call:
        return _twin_functional(layer)
    raise TwinError(f"model '{layer.name}' is subclassed ({type(layer).__name__}): only Sequential and "
                    + "Functional models have a layer graph to rebuild; build it with the functional API.")  # fmt: skip


def _twin_sequential(model) -> keras.Model:
    if getattr(model, "_functional", None) is None:
        raise TwinError(f"model '{model.name}' is not built; give it a keras.Input or call it once on data.")
    twins = [_twin(layer) for layer in model.layers]
    try:
        twin = keras.Sequential([_twin_input(model.inputs[0]._keras_history.operation), *twins], name=model.name)
    except (TypeError, ValueError) as e:
        raise TwinError(f"model '{model.name}': its tf_keras layers do not stack: {e}") from e
    for layer, twin_layer in zip(model.layers, twins, strict=True):
        _copy_weights(layer, twin_layer)
    return twin


def _twin_functional(model) -> keras.Model:
    keras3 = _keras3()
    # id(Keras 3 tensor) -> its tf_keras tensor
    tensors = {id(t): _twin_input(t._keras_history.operation) for t in model.inputs}
    twins = {}  # id(Keras 3 layer) -> its twin; a shared layer gets one twin, called once per node

    def translated(value):
        return tensors[id(value)] if isinstance(value, keras3.KerasTensor) else value

    for depth in sorted(model._nodes_by_depth, reverse=True):  # inputs first
        for node in model._nodes_by_depth[depth]:
            op = node.operation
            if isinstance(op, keras3.layers.InputLayer):
                continue
            args = keras3.tree.map_structure(translated, node.arguments.args)
            kwargs = keras3.tree.map_structure(translated, node.arguments.kwargs)
            if isinstance(op, keras3.layers.Layer):
                if id(op) not in twins:
                    twins[id(op)] = _twin(op)
                twin = twins[id(op)]
            else:
                twin, args, kwargs = _twin_op(op, args, kwargs)
            try:
                outputs = tf.nest.flatten(twin(*args, **kwargs))
            except (TypeError, ValueError) as e:
                raise TwinError(f"{_where(op)}: its tf_keras twin fails on the rebuilt graph: {e}") from e
            for tensor, output in zip(node.outputs, outputs, strict=True):
                tensors[id(tensor)] = output
    inputs = keras3.tree.map_structure(translated, model._inputs_struct)
    twin_model = keras.Model(inputs, keras3.tree.map_structure(translated, model._outputs_struct), name=model.name)
    for op in model.operations:
        if id(op) in twins:
            _copy_weights(op, twins[id(op)])
    return twin_model


def _twin_input(layer):
    """A tf_keras Input for a Keras 3 InputLayer, with its batch shape, dtype and name."""
    config = layer.get_config()
    if config.get("optional"):
        raise TwinError(f"{_where(layer)}: option optional=True exists only in Keras 3")
    dtype, flags = _policy(config.get("dtype"), _where(layer)), {k: config.get(k, False) for k in ("sparse", "ragged")}
    return keras.Input(batch_shape=config["batch_shape"], dtype=dtype, name=layer.name, **flags)


def _twin_layer(layer):
    where = _where(layer)
    twin_class = _twin_class(type(layer), where)
    config = _translate(type(layer), twin_class, layer.get_config(), where)
    try:
        try:
            return twin_class.from_config(dict(config))
        except KeyError:  # tf_keras MultiHeadAttention.from_config wants the query, key and value shapes
            return twin_class(**config)
    except (TypeError, ValueError) as e:
        raise TwinError(f"{where}: tf_keras {twin_class.__name__} refuses its translated config: {e}") from e


def _twin_class(keras3_class: type, where: str) -> type:
    name = _keras3().saving.get_registered_name(keras3_class)
    if name in _TWINS:
        return _TWINS[name]
    if keras3_class.__module__.startswith("keras."):  # a Keras 3 built-in: the tf_keras layer of its name
        twin = getattr(keras.layers, keras3_class.__name__, None)
        if isinstance(twin, type) and issubclass(twin, keras.layers.Layer):
            return twin
    raise TwinError(f"{where} has no tf_keras counterpart; give it one with "
                    + f"tfcompress.twin.register_twin({name!r}, TfKerasLayerClass).")  # fmt: skip


def _translate(keras3_class: type, twin_class: type, config: dict, where: str) -> dict:
    """The Keras 3 layer config as the tf_keras class takes it: no initializers (the weights are copied
    afterwards), options tf_keras lacks dropped at their Keras 3 defaults (from the signature), refused otherwise.
    """
    accepted, translated = _accepted(twin_class), {}
    for key, value in config.items():
        if key.endswith("_initializer"):
            continue
        if key not in accepted:
            if _at_default(keras3_class, config, key):
                continue  # an option at its Keras 3 default changes nothing
            raise TwinError(f"{where}: option {key}={value!r} exists only in Keras 3")
        if key == "dtype":
            translated[key] = _policy(value, where)
        elif key in ("activation", "recurrent_activation"):
            translated[key] = _twin_activation(value) if isinstance(value, str) else None
            if translated[key] is None:
                raise TwinError(f"{where}: activation {value!r} has no tf_keras counterpart that computes the same")
        elif key.endswith(("_regularizer", "_constraint")):
            if (plain := _plain_object(key, value)) is not None or value is None:
                translated[key] = plain  # one tf_keras cannot read is dropped: it only shapes training
        elif isinstance(value, dict) and {"class_name", "config"} <= value.keys():
            translated[key] = _nested_layer(key, value, where)
        else:
            translated[key] = value
    return translated


def _policy(value, where: str):
    """A Keras 3 DTypePolicy dict as the plain policy name tf_keras takes."""
    if not isinstance(value, dict):
        return value
    if value.get("class_name") not in ("DTypePolicy", "FloatDTypePolicy"):
        raise TwinError(f"{where}: dtype policy {value.get('class_name')} {value.get('config')} exists only in Keras 3")
    return value["config"]["name"]


@functools.cache
def _twin_activation(name: str):
    """The tf_keras activation that computes what Keras 3's ``name`` does, or None; checked on values, since a
    name can mean different functions (Keras 3's hard_sigmoid is relu6(x + 3) / 6, tf_keras' 0.2 x + 0.5)."""
    x = np.linspace(-8.0, 8.0, 65, dtype=np.float32)[None]
    want = np.asarray(_keras3().activations.get(name)(x))
    for candidate in (name, _SUBSTITUTES.get(name)):
        try:
            got = np.asarray(keras.activations.get(candidate)(tf.constant(x)))
        except (TypeError, ValueError):
            continue
        if candidate is not None and got.shape == want.shape and np.allclose(got, want, rtol=0, atol=1e-6):
            return candidate
    return None


# Keras 3's hard_sigmoid, relu6(x + 3) / 6, and hard_silu (hard_swish), x * hard_sigmoid(x), which tf_keras lacks.
@keras.saving.register_keras_serializable(package="tfcompress", name="hard_sigmoid")
def _hard_sigmoid(x):
    return tf.nn.relu6(x + 3.0) / 6.0


@keras.saving.register_keras_serializable(package="tfcompress", name="hard_silu")
def _hard_silu(x):
    return x * _hard_sigmoid(x)


_SUBSTITUTES = {"hard_sigmoid": _hard_sigmoid, "hard_silu": _hard_silu, "hard_swish": _hard_silu}


def _plain_object(key: str, value):
    """A Keras 3 regularizer or constraint as tf_keras' {"class_name", "config"}; None if it has none."""
    plain = {"class_name": value.get("class_name"), "config": value.get("config")} if isinstance(value, dict) else {}
    try:
        return (keras.constraints if key.endswith("_constraint") else keras.regularizers).get(dict(plain)) and plain
    except (TypeError, ValueError):
        return None


def _nested_layer(key: str, value: dict, where: str) -> dict:
    """A layer serialized inside a config (a wrapper's ``layer``, an RNN's ``cell``) in tf_keras form."""
    keras3, registered = _keras3(), value.get("registered_name")
    keras3_class = (keras3.saving.get_registered_object(registered) if registered
                    else getattr(keras3.layers, str(value["class_name"]), None))  # fmt: skip
    if not (isinstance(keras3_class, type) and issubclass(keras3_class, keras3.layers.Layer)):
        raise TwinError(f"{where}: option {key} holds a Keras 3 {value['class_name']} with no tf_keras form")
    inner = f"{where}, its {key} ({keras3_class.__name__})"
    twin_class = _twin_class(keras3_class, inner)
    return {"class_name": twin_class.__name__,
            "config": _translate(keras3_class, twin_class, value["config"], inner)}  # fmt: skip


def _twin_op(op, args, kwargs):
    """The tf_keras layer for a bare Keras 3 op (``x + 3.0``) of a graph, and the arguments to call it with."""
    kind = type(op).__name__
    where = f"operation '{op.name}' ({kind}, a Keras 3 op, not a layer)"
    tensors = [tf.is_tensor(a) and keras.backend.is_keras_tensor(a) for a in args]
    if kind in ("Add", "Subtract", "Multiply") and not kwargs and tensors == [True, True]:
        return getattr(keras.layers, kind)(name=op.name), (list(args),), {}
    simple = kind in ("Add", "Subtract", "Multiply", "Divide", "TrueDivide") and set(op.get_config()) <= {"name"}
    if not simple or kwargs or len(args) != 2 or sum(tensors) != 1 or (kind.endswith("Divide") and not tensors[0]):
        raise TwinError(f"{where} has no tf_keras layer; express it with Keras layers or register a layer twin")
    tensor, constant = args if tensors[0] else reversed(args)
    if not isinstance(constant, int | float | np.ndarray | np.number):
        raise TwinError(f"{where}: its constant {constant!r} is not a number or array")
    c = np.asarray(constant, dtype=np.float64)
    minus = (1.0, -c) if tensors[0] else (-1.0, c)
    scale, offset = {"Add": (1.0, c), "Multiply": (c, 0.0), "Subtract": minus}.get(kind, (1.0 / c, 0.0))
    return keras.layers.Rescaling(np.asarray(scale).tolist(), np.asarray(offset).tolist(), name=op.name), (tensor,), {}


def _copy_weights(layer, twin) -> None:
    """Copies a Keras 3 layer's weights into its built twin, matched by name where names match, else by order."""
    if isinstance(layer, _keras3().Model):  # its layers got their weights when it was rebuilt
        return
    values, names = layer.get_weights(), [w.path for w in layer.weights]
    twin_names = [w.name.split(":")[0] for w in twin.weights]
    if len(set(names)) == len(names) and set(names) == set(twin_names):
        values = [values[names.index(name)] for name in twin_names]
    shapes, twin_shapes = [tuple(v.shape) for v in values], [tuple(w.shape) for w in twin.weights]
    if shapes != twin_shapes:
        raise TwinError(f"{_where(layer)}: its weights {shapes} do not fit its tf_keras twin's {twin_shapes}")
    twin.set_weights(values)
    twin.finalize_state()  # Normalization recomputes its mean and variance from the copied state


@functools.cache
def _accepted(cls: type) -> frozenset[str]:
    """The keyword arguments a tf_keras layer class takes, following **kwargs up its bases."""
    names = set()
    for klass in cls.__mro__:
        if "__init__" not in vars(klass):
            continue
        parameters = inspect.signature(klass.__init__).parameters.values()
        names |= {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
        if klass is keras.layers.Layer:
            names |= _BASE_KWARGS
        if klass is keras.layers.Layer or not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    return frozenset(names - {"self"})


@functools.cache
def _defaults(cls: type) -> dict:
    """The default values of a Keras 3 layer class's keyword arguments, the most derived class winning."""
    defaults = {}
    for klass in reversed(cls.__mro__):
        try:
            parameters = inspect.signature(vars(klass)["__init__"]).parameters.values()
        except (KeyError, TypeError, ValueError):
            continue
        defaults.update({p.name: p.default for p in parameters if p.default is not p.empty})
    return defaults


def _at_default(keras3_class: type, config: dict, key: str) -> bool:
    """Whether option ``key`` is at its Keras 3 default: the signature's, else that of a layer made without it."""
    defaults, value = _defaults(keras3_class), config[key]
    try:
        if key not in defaults:  # popped from **kwargs (LayerNormalization's rms_scaling): ask a layer made without it
            defaults = keras3_class.from_config({k: v for k, v in config.items() if k != key}).get_config()
        return bool(value == defaults[key])
    except (TypeError, ValueError, KeyError):  # no default, or arrays that compare element-wise
        return False


def _max_difference(a, b) -> float:
    a, b = tf.nest.flatten(a), tf.nest.flatten(b)
    if len(a) != len(b) or any(np.shape(p) != np.shape(q) for p, q in zip(a, b, strict=True)):
        return float("inf")
    a, b = ([np.asarray(v, np.float64) for v in values] for values in (a, b))
    return max((float(np.max(np.abs(p - q), initial=0.0)) for p, q in zip(a, b, strict=True)), default=0.0)


def _single_call_outputs(graph, layer_of) -> dict:
    """{name: output} in graph order for the layers called once in ``graph``, with one output."""
    nodes = [node for depth in sorted(graph._nodes_by_depth, reverse=True) for node in graph._nodes_by_depth[depth]]
    calls = collections.Counter(layer_of(node).name for node in nodes)
    outputs = {}
    for node in nodes:
        layer, flat = layer_of(node), tf.nest.flatten(node.outputs)
        if calls[layer.name] == 1 and len(flat) == 1 and type(layer).__name__ != "InputLayer":
            outputs[layer.name] = flat[0]
    return outputs


def _layer_differences(original, twin, x):
    """Yields (name, largest difference) for the same-named single-call layers of both, in graph order."""
    keras3 = _keras3()
    graph = original._functional if isinstance(original, keras3.Sequential) else original
    want = _single_call_outputs(graph, lambda node: node.operation)
    got = _single_call_outputs(twin, lambda node: node.layer)
    names = [name for name in want if name in got]
    if names:
        wants = keras3.Model(graph._inputs_struct, [want[name] for name in names])(x, training=False)
        gots = keras.Model(twin.input, [got[name] for name in names])(x, training=False)
        yield from zip(names, (_max_difference(a, b) for a, b in zip(wants, gots, strict=True)), strict=True)
