"""Multiply-accumulates (MACs) of a model, counted from its shapes: in a .tflite graph and in a Keras model.

One MAC is one multiply and one add (2 flops). Only the ops that carry a model's arithmetic are counted:

- CONV_2D (Keras Conv2D): output elements x kh x kw x input channels per group.
- DEPTHWISE_CONV_2D (DepthwiseConv2D): output elements x kh x kw.
- FULLY_CONNECTED (Dense): output elements x input features (the TFLite kernel is (units, in)).
- TRANSPOSE_CONV (Conv2DTranspose): input elements x kh x kw x output channels.
- BATCH_MATMUL (attention's two matmuls in MultiHeadAttention): output elements x the contracted dimension.

Elementwise and reduction ops (ADD, MUL, activations, pooling, MEAN, softmax, normalization,
QUANTIZE/DEQUANTIZE, ...) are left out: they are memory-bound and a small share of a CNN's arithmetic.
A quantized or float16 graph has the same shapes as its float32 source, so the same count (a float16
kernel is read through a DEQUANTIZE op, whose output has the kernel's shape). ``keras_macs`` counts
per example (batch 1); ``tflite_macs`` counts the graph as converted, batch 1 for a converted Keras model.

Shapes come from an interpreter without XNNPACK after ``allocate_tensors()``. Some graphs compute shapes at
run time (tf_keras Dense on a 3-D input with a dynamic batch becomes SHAPE, GATHER, PACK and RESHAPE in front
of a FULLY_CONNECTED whose input is 1x1 until then); where a counted op's tensor has an unknown non-batch
dimension the graph is invoked once on zeros so that every shape is real.
"""

from __future__ import annotations

import math

import numpy as np

from tfcompress.measure.tflite_graph import OpInfo, TensorInfo


def _op_macs(op: OpInfo) -> int:
    out = op.outputs[0]
    if op.name == "CONV_2D":
        _, kh, kw, cin_per_group = op.inputs[1].shape  # filter (out, kh, kw, in / groups)
        return out.size * kh * kw * cin_per_group
    if op.name == "DEPTHWISE_CONV_2D":
        _, kh, kw, _ = op.inputs[1].shape  # filter (1, kh, kw, out)
        return out.size * kh * kw
    if op.name == "FULLY_CONNECTED":
        return out.size * op.inputs[1].shape[-1]  # filter (units, in)
    if op.name == "TRANSPOSE_CONV":
        cout, kh, kw, _ = op.inputs[1].shape  # inputs (output_shape, filter (out, kh, kw, in), input)
        return op.inputs[2].size * kh * kw * cout
    if op.name == "BATCH_MATMUL":
        x = op.inputs[0].shape  # (..., m, k), or (..., k, m) with adj_x
        k = x[-1] if x[-2] == out.shape[-2] else x[-2]
        return out.size * k
    return 0


MAC_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "TRANSPOSE_CONV", "BATCH_MATMUL")


def _ops_with_shapes(model: bytes | str) -> list[OpInfo]:
    """The graph's ops with the shapes the tensors really have at batch 1 (see the module docstring)."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    plain = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES  # every node prepared, so every shape propagated
    if isinstance(model, (bytes, bytearray)):
        interpreter = Interpreter(model_content=bytes(model), experimental_op_resolver_type=plain)
    else:
        interpreter = Interpreter(model_path=str(model), experimental_op_resolver_type=plain)
    interpreter.allocate_tensors()
    nodes = interpreter._get_ops_details()  # the only op-level view LiteRT's Python API offers
    details = {t["index"]: t for t in interpreter.get_tensor_details()}
    counted = [i for node in nodes if node["op_name"] in MAC_OPS for i in (*node["inputs"], *node["outputs"]) if i >= 0]
    if any(-1 in list(details[i]["shape_signature"])[1:] for i in counted):  # shapes known only at run time
        for d in interpreter.get_input_details():
            interpreter.set_tensor(d["index"], np.zeros(d["shape"], d["dtype"]))
        interpreter.invoke()
        details = {t["index"]: t for t in interpreter.get_tensor_details()}
    tensors = {
        i: TensorInfo(i, t["name"], np.dtype(t["dtype"]), tuple(int(d) for d in t["shape"])) for i, t in details.items()
    }
    return [
        OpInfo(
            node["op_name"],
            tuple(tensors[i] for i in node["inputs"] if i >= 0),
            tuple(tensors[i] for i in node["outputs"] if i >= 0),
        )
        for node in nodes
    ]


def macs_by_op(model: bytes | str) -> dict[str, int]:
    """MACs of a .tflite model (bytes or path) per op name, for the op kinds that are counted."""
    result: dict[str, int] = {}
    for op in _ops_with_shapes(model):
        if op.name in MAC_OPS:
            result[op.name] = result.get(op.name, 0) + _op_macs(op)
    return result


# The data types a MAC can run in, as the recipes export them (and tfcompress.measure.roofs times them).
DTYPES = ("fp32", "float16", "dynamic_range", "int8", "int16x8")


def _op_dtype(op: OpInfo, producer: dict[int, OpInfo]) -> str:
    """The data type one MAC op computes in: its activation's type, and for float activations its weights'."""
    activation = op.inputs[2] if op.name == "TRANSPOSE_CONV" else op.inputs[0]
    if activation.dtype in (np.int8, np.uint8):
        return "int8"
    if activation.dtype == np.int16:
        return "int16x8"
    if activation.dtype != np.float32:
        return str(activation.dtype)
    weight = op.inputs[1]
    source = producer.get(weight.index)
    if source is not None and source.name == "DEQUANTIZE":
        weight = source.inputs[0]
    if weight.dtype == np.float16:
        return "float16"
    if weight.dtype in (np.int8, np.uint8):
        return "dynamic_range"
    return "fp32"


def macs_by_dtype(model: bytes | str) -> dict[str, int]:
    """MACs of a .tflite model (bytes or path) per data type they run in (``DTYPES``), e.g. {"int8": ...}.

    An op's type is its activation's (int8, int16) or, for float activations, its weights': float16
    constants behind a DEQUANTIZE are float16, int8 ones dynamic_range, else fp32.
    """
    ops = _ops_with_shapes(model)
    producer = {t.index: op for op in ops for t in op.outputs}
    result: dict[str, int] = {}
    for op in ops:
        if op.name in MAC_OPS:
            dtype = _op_dtype(op, producer)
            result[dtype] = result.get(dtype, 0) + _op_macs(op)
    return result


def compute_dtype(model: bytes | str) -> str | None:
    """The data type most of a model's MACs run in (``macs_by_dtype``), or None for a model with none."""
    by_dtype = macs_by_dtype(model)
    return max(by_dtype, key=by_dtype.get) if by_dtype else None


def tflite_macs(model: bytes | str) -> int:
    """Total MACs of one invoke() of a .tflite model (bytes or path); see the module docstring."""
    return sum(macs_by_op(model).values())


def _keras_layer_macs(layer, input_shape: tuple, output_shape: tuple) -> int:
    from tfcompress._keras import keras

    layers = keras.layers
    per_example_out = math.prod(output_shape[1:])
    if isinstance(layer, layers.Conv2DTranspose):  # a Conv2D subclass: test it first
        kh, kw = layer.kernel_size
        return math.prod(input_shape[1:]) * kh * kw * layer.filters
    if isinstance(layer, layers.DepthwiseConv2D):
        kh, kw = layer.kernel_size
        return per_example_out * kh * kw
    if isinstance(layer, layers.SeparableConv2D):
        kh, kw = layer.kernel_size
        depthwise_out = math.prod(output_shape[1:-1]) * input_shape[-1] * layer.depth_multiplier
        return depthwise_out * kh * kw + per_example_out * input_shape[-1] * layer.depth_multiplier
    if isinstance(layer, layers.Conv2D):
        kh, kw = layer.kernel_size
        return per_example_out * kh * kw * (input_shape[-1] // layer.groups)
    if isinstance(layer, layers.Dense):
        return per_example_out * input_shape[-1]
    if isinstance(layer, layers.MultiHeadAttention) and layer._query_shape is not None:
        return _attention_macs(layer)
    return 0


def _attention_macs(layer) -> int:
    """Q, K, V and output projections plus the two attention matmuls (scores, weighted sum) of one call."""
    query, value = tuple(layer._query_shape), tuple(layer._value_shape)
    key = tuple(layer._key_shape) if layer._key_shape is not None else value
    heads, key_dim, value_dim = layer._num_heads, layer._key_dim, layer._value_dim
    t_query, t_value = math.prod(query[1:-1]), math.prod(value[1:-1])
    out_dim = math.prod(layer._output_shape) if layer._output_shape else query[-1]
    projections = t_query * query[-1] * heads * key_dim + t_value * key[-1] * heads * key_dim
    projections += t_value * value[-1] * heads * value_dim + t_query * heads * value_dim * out_dim
    return projections + heads * t_query * t_value * (key_dim + value_dim)


def keras_macs(model) -> int:
    """MACs of one example through a functional or Sequential tf_keras model, from its layers' shapes.

    Counts Conv2D (with groups), DepthwiseConv2D, SeparableConv2D, Conv2DTranspose, Dense and
    MultiHeadAttention (its four projections and two matmuls) the way ``tflite_macs`` counts their TFLite
    ops, every call of a layer once; recurses into nested models. Other layers count 0.

    Raises:
      ValueError: the model is subclassed or not built, so its layers' shapes are unknown.
    """
    if not getattr(model, "_is_graph_network", False):
        raise ValueError(
            f"keras_macs needs a functional or Sequential model built on an Input; {type(model).__name__} "
            + "is subclassed or not built. Count its .tflite with tflite_macs instead."
        )
    from tfcompress._keras import tf

    total = 0
    for nodes in model._nodes_by_depth.values():
        for node in nodes:
            if node.is_input:
                continue
            if getattr(node.layer, "_is_graph_network", False):
                total += keras_macs(node.layer)
                continue
            inputs, outputs = tf.nest.flatten(node.input_tensors), tf.nest.flatten(node.output_tensors)
            if not inputs or not outputs:
                continue
            input_shape, output_shape = tuple(inputs[0].shape), tuple(outputs[0].shape)
            total += _keras_layer_macs(node.layer, input_shape, output_shape)
    return int(total)
