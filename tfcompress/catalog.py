"""The full recipe catalogue: importing this registers every recipe and alias.

The order of registration is the order of a default study: the post-training
exports, then the training-time transforms, then the fixed combinations.
"""

from tfcompress import recipes

# Importing a module registers its recipes; import order is the default study's order.
# isort: off
from tfcompress import pruning  # noqa: E402, F401
from tfcompress import clustering  # noqa: E402, F401
from tfcompress import qat  # noqa: E402, F401
from tfcompress import lowrank  # noqa: E402, F401
from tfcompress import channel_prune  # noqa: E402, F401
from tfcompress import distill  # noqa: E402, F401
from tfcompress import lora  # noqa: E402, F401  (lora and finetune: not in the default study)

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
    recipes.register_alias(_name, _spec, _description)
