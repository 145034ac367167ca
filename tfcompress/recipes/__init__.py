"""Compression recipes: what a recipe is (base), pipelines of them (pipeline), and one module per family.

Importing this package registers every recipe and alias. The order of
registration is the order of a default study: the post-training exports (the
TFLite converter back end), then the training-time transforms, then the
fixed combinations.

    base.py           Recipe, Params fields, Column, the registry, export back ends
    pipeline.py       recipe specs ('prune:0.8>int8'): parsing and running
    converter.py      the TFLite converter: the post-training exports
    quantizer.py      the LiteRT Quantizer: `quantize` on the fp32 file (int4, blockwise, weight-only, ...)
    training.py       what fine-tuning recipes share (FinetuneParams, the training call)
    finetune.py       `finetune`: full fine-tuning, the control for lora
    pruning.py clustering.py qat.py      TFMOT
    lowrank.py channel_prune.py distill.py lora.py
"""

from tfcompress.recipes.base import (
    BASELINE,
    Baseline,
    Column,
    Compressed,
    ExportBackend,
    Kind,
    NotApplicable,
    Recipe,
    RecipeContext,
    RecipeError,
    Transformed,
    describe,
    get,
    names,
    param,
    register,
    register_alias,
    register_backend,
    spread,
)
from tfcompress.recipes.pipeline import Pipeline, Stage, parse, parse_recipes, run

# Importing a module registers its recipes; import order is the default study's order.
# isort: off
from tfcompress.recipes import converter  # noqa: E402, F401
from tfcompress.recipes import quantizer  # noqa: E402, F401  (quantize: not in the default study)
from tfcompress.recipes import pruning  # noqa: E402, F401
from tfcompress.recipes import clustering  # noqa: E402, F401
from tfcompress.recipes import qat  # noqa: E402, F401
from tfcompress.recipes import lowrank  # noqa: E402, F401
from tfcompress.recipes import channel_prune  # noqa: E402, F401
from tfcompress.recipes import distill  # noqa: E402, F401
from tfcompress.recipes import lora  # noqa: E402, F401  (lora: not in the default study)
from tfcompress.recipes import finetune  # noqa: E402, F401  (finetune: not in the default study)

# isort: on

for _name, _spec, _description in [
    ("prune_int8", "prune>int8", "pruned, then full-integer post-training quantization"),
    (
        "channel_prune_sparse_int8",
        "channel_prune>prune>int8",
        "filters removed, then TFMOT sparsity on what is left, then full-integer quantization: the smallest file",
    ),
    ("cluster_int8", "cluster>int8", "clustered, then full-integer post-training quantization"),
    ("pqat", "prune>qat:preserve=sparsity", "sparsity-preserving QAT of the pruned model (TFMOT PQAT)"),
    ("cqat", "cluster>qat:preserve=clusters", "cluster-preserving QAT of the clustered model (TFMOT CQAT)"),
    (
        "pcqat",
        "prune>cluster:preserve_sparsity=true>qat:preserve=all",
        "pruned, sparsity-preserving clustering, then QAT preserving both (TFMOT PCQAT)",
    ),
]:
    register_alias(_name, _spec, _description)

# The LiteRT Quantizer's common cases (not in the default study: run them with --recipes).
for _name, _spec, _description in [
    ("q_dynamic_int8", "quantize:weights=8:activations=float", "LiteRT Quantizer: int8 weights, dynamic activations"),
    ("q_int8", "quantize:weights=8:activations=8", "LiteRT Quantizer: full integer, int8 weights and activations"),
    ("q_int16x8", "quantize:weights=8:activations=16", "LiteRT Quantizer: int16 activations, int8 weights"),
    ("q_weight_only_int4", "quantize:weights=4:activations=none", "LiteRT Quantizer: int4 weights, float compute"),
    (
        "q_int4_block32",
        "quantize:weights=4:activations=float:granularity=block32",
        "LiteRT Quantizer: int4 weights in blocks of 32 (fully-connected; int4 per channel elsewhere), dynamic",
    ),
]:
    register_alias(_name, _spec, _description, in_default_study=False)

__all__ = [
    "BASELINE",
    "Baseline",
    "Column",
    "Compressed",
    "ExportBackend",
    "Kind",
    "NotApplicable",
    "Pipeline",
    "Recipe",
    "RecipeContext",
    "RecipeError",
    "Stage",
    "Transformed",
    "describe",
    "get",
    "names",
    "param",
    "parse",
    "parse_recipes",
    "register",
    "register_alias",
    "register_backend",
    "run",
    "spread",
]
