"""What the advisor tries, cheap first (as Intel Neural Compressor and AIMET order their tuning).

- Stage 0: post-training recipes, no fine-tuning (``POST_TRAINING``).
- Stage 1: repairs of the stage-0 recipes that missed only the metric limit:
  the same quantization with op types known to be fragile kept float
  (softmax and normalization statistics), the same with one weight scale per
  tensor (a small model's per-channel scales and int64 zero points are a
  visible share of its file), then with the layers whose error
  alone is largest kept float (``skip=auto``, ``skip_top=N``, from
  tfcompress.recipes.quantizer_layers).
- Stage 2: training-time recipes, chosen by the sampler: filter removal
  (when channel_prune can narrow the model), pruning (uniform or allocated by sensitivity),
  clustering, and the export that follows. The first points are enqueued in
  cost order (one fine-tuned transform before two), each followed by the
  export that did best on the objective in stages 0-1; the sampler takes
  over from there.

Every candidate is a recipe spec that ``experiments.study --recipes=SPEC``
runs as it is; trials are de-duplicated by ``key`` (the resolved stages).
"""

from __future__ import annotations

from tfcompress.recipes.pipeline import parse

POST_TRAINING = (
    "fp32",  # the model as it is: the answer when the limits allow it and the objective is the metric
    "dynamic_range",
    "float16",
    "int8",
    "q_dynamic_int8",
    "q_int8",
    "quantize:weights=4:activations=float",
    "q_int4_block32",
    "int16x8",
)
# Op types whose activations int8 breaks first in transformers: the masked softmax, the LayerNorm statistics.
FRAGILE_OPS = "SOFTMAX|MEAN|SQUARED_DIFFERENCE|RSQRT"
STATIC_INT8 = "quantize:weights=8:activations=8"
REPAIRS = {  # a stage-0 recipe that broke the metric -> what stage 1 tries instead, in order
    "int8": "static",
    "q_int8": "static",
    "int16x8": "static",
    "quantize:weights=4:activations=float": "int4",
    "q_int4_block32": "int4",
}
KEEP_FRACTIONS = (1.0, 0.5, 0.375, 0.25, 0.125)  # 1.0: no filter removal
SPARSITIES = (0.0, 0.5, 0.7, 0.8, 0.9, 0.95)  # 0.0: no pruning
CLUSTERS = (0, 32, 16, 8, 4)  # 0: no clustering
EXPORTS = ("int8", "dynamic_range", "quantize:weights=4:activations=float", f"{STATIC_INT8}:skip=auto")
WARM_START = (  # stage 2's first points, cheapest first (fine-tuned transforms: 1, 1, 1, 2); export: see warm_start
    {"keep_fraction": 1.0, "sparsity": 0.0, "clusters": 8},
    {"keep_fraction": 1.0, "sparsity": 0.8, "allocation": "sensitivity", "clusters": 0},
    {"keep_fraction": 0.25, "sparsity": 0.0, "clusters": 0},
    {"keep_fraction": 0.25, "sparsity": 0.0, "clusters": 8},
)


def key(spec: str, defaults=None) -> tuple:
    """What makes two specs the same trial: their stages with every parameter resolved."""
    return tuple(stage.key() for stage in parse(spec, defaults).stages)


def repairs(spec: str) -> list[str]:
    """Stage 1's candidates for a stage-0 recipe that missed only the metric limit (cheapest change first)."""
    kind = REPAIRS.get(spec)
    if kind == "static":
        return [f"{STATIC_INT8}:float_ops=SOFTMAX", f"{STATIC_INT8}:float_ops={FRAGILE_OPS}",
                f"{STATIC_INT8}:granularity=tensor:float_ops={FRAGILE_OPS}", f"{STATIC_INT8}:skip=auto",
                f"{STATIC_INT8}:skip_top=1", f"{STATIC_INT8}:skip_top=2",
                f"{STATIC_INT8}:float_ops={FRAGILE_OPS}:skip_top=1"]  # fmt: skip
    if kind == "int4":
        base = "quantize:weights=4:activations=float" if spec.startswith("quantize") else (
            "quantize:weights=4:activations=float:granularity=block32")  # fmt: skip
        return [f"{base}:skip=auto", f"{base}:skip_top=1", f"{base}:skip_top=2"]
    return []


def sample(trial, convolutional: bool) -> str:
    """Stage 2: the sampler's choice of transforms and export, as a spec (define-by-run, so Optuna records it)."""
    keep = trial.suggest_categorical("keep_fraction", KEEP_FRACTIONS) if convolutional else 1.0
    sparsity = trial.suggest_categorical("sparsity", SPARSITIES)
    allocation = trial.suggest_categorical("allocation", ("uniform", "sensitivity")) if sparsity else None
    clusters = trial.suggest_categorical("clusters", CLUSTERS)
    export = trial.suggest_categorical("export", EXPORTS)
    return spec_of(keep, sparsity, allocation, clusters, export)


def spec_of(keep: float, sparsity: float, allocation: str | None, clusters: int, export: str) -> str:
    parts = []
    if keep < 1:
        parts.append(f"channel_prune:keep_fraction={keep:g}")
    if sparsity:
        parts.append(
            f"prune:sparsity={sparsity:g}" + (":allocation=sensitivity" if allocation == "sensitivity" else "")
        )
    if clusters:
        parts.append(f"cluster:clusters={clusters}" + (":preserve_sparsity=true" if sparsity else ""))
    return ">".join([*parts, export])


def warm_start(convolutional: bool, export: str = "int8") -> list[dict]:
    """The enqueued first points of stage 2 that fit the model (no filter removal without Conv2D).

    ``export`` (one of EXPORTS) follows each point's transforms: the caller passes the export that did best on
    the objective in the earlier stages (4-bit weights for a gzip objective, int8 for latency), so that the
    first fine-tuned trials build on it rather than on a fixed int8.
    """
    if export not in EXPORTS:
        raise ValueError(f"export {export!r} is not one of the stage-2 exports {EXPORTS}.")
    return [{**p, "export": export} for p in WARM_START if convolutional or p["keep_fraction"] == 1.0]


def transforms(spec: str) -> int:
    """How many fine-tuned transforms a spec runs (its cost order)."""
    return spec.count(">")
