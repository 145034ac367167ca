"""A seeded toy search for the advisor's tests: the real Optuna search and journal, made-up trial rows.

``python -m tests.advise_toy OUT [--resume]`` runs the advisor with its trials' study replaced by a function
of the spec (figures that depend on the spec alone, each batch taking DELAY_S), so a search takes seconds and
is the same on every run. Each batch appends a line to OUT/batches.txt, for a test to kill the process at.
"""

import hashlib
import json
import os
import sys
import time
import types

from tfcompress.advise import Constraints, SearchOptions, advise, advisor, search
from tfcompress.study import from_flat

DELAY_S = 0.3


def _unit(spec: str, salt: str) -> float:
    return int(hashlib.sha256((salt + spec).encode()).hexdigest()[:8], 16) / 0xFFFFFFFF


def toy_row(spec: str) -> dict:
    """Bigger compression costs accuracy; the more transforms and the lower the bits, the smaller.

    Keeping an eighth of the filters is stopped in fine-tuning (a pruned trial).
    """
    if "keep_fraction=0.125" in spec:
        return {"task": "classification", "model": "cnn", "recipe": spec, "status": "failed",
                "error": "FinetuneStopped: after 1 epoch(s) ..."}  # fmt: skip
    if spec == "fp32":
        size, accuracy = 100_000, 0.95
    else:
        shrink = 0.2 + 0.8 * _unit(spec, "size") / (1 + spec.count(">"))
        size = int(100_000 * shrink)
        accuracy = 0.95 - 0.04 * (1 - shrink) * _unit(spec, "metric")
    latency = {"threads": 1, "runtime": "interpreter", "median_ms": 1.0 * size / 100_000, "p90_ms": 1.0,
               "p99_ms": 1.0, "mean_ms": 1.0, "std_ms": 0.0, "runs": 1}  # fmt: skip
    return {"task": "classification", "model": "cnn", "recipe": spec, "status": "ok", "metric": accuracy,
            "size_bytes": size, "gzip_bytes": int(size * 0.9), "latency": [latency],
            "tflite_path": f"cnn/{hashlib.sha256(spec.encode()).hexdigest()[:12]}.tflite"}  # fmt: skip


def install(patch=setattr) -> None:
    """Replaces the trials' study (and the pick's re-measurement) with the toy (``patch``: pytest's monkeypatch)."""

    def fake_run(self, specs):
        self.specs += [s for s in specs if s not in self.specs]
        time.sleep(DELAY_S)
        os.makedirs(os.path.join(self.study_dir, "cnn"), exist_ok=True)
        self.rows = {s: toy_row(s) for s in ["fp32", *self.specs]}
        for row in (r for r in self.rows.values() if r.get("tflite_path")):
            with open(os.path.join(self.study_dir, row["tflite_path"]), "wb") as f:
                f.write(b"x" * 16)
        with open(os.path.join(self.out, "batches.txt"), "a") as f:
            f.write(json.dumps({"new": specs, "study": self.specs}) + "\n")

    model = types.SimpleNamespace(trainable=object(), model=None, why_not_trainable="")
    patch(search.Search, "_run", fake_run)
    patch(advisor, "_removes_filters", lambda model: True)  # the toy model "has" convolutions
    patch(search.Search, "prepared", lambda self: types.SimpleNamespace(model=model, dataset=None))
    patch(advisor, "_remeasure", lambda s, pick, dataset, limits, progress: {
        "figures": pick["figures"], "meets_limits": True, "rounds": 1, "misses": None})  # fmt: skip


def main(argv) -> int:
    out, resume = argv[1], "--resume" in argv
    limits = Constraints(max_drop=float(os.environ.get("TOY_MAX_DROP", "1")), objective="size")
    config = from_flat(output_dir=out)
    install()
    result = advise(config, limits, SearchOptions(trials=int(os.environ.get("TOY_TRIALS", "24")), batch=2,
                                                  resume=resume), progress=print)  # fmt: skip
    print(json.dumps({"pick": result["pick"]["spec"] if result["pick"] else None,
                      "trials": [(t["spec"], t["status"]) for t in result["trials"]]}))  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
