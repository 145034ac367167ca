"""The advisor: given limits on quality loss, size and latency, the recipe and file to ship.

``advise(config, Constraints(max_drop=1, objective="gzip"))`` searches recipes
in stages, cheap first (tfcompress.advise.space), with Optuna
(tfcompress.advise.search), and writes advice.json, advice.md, pareto.png and
pick.tflite under the config's output directory (tfcompress.advise.output).
"""

from tfcompress.advise.advisor import advise
from tfcompress.advise.constraints import OBJECTIVES, AdviseError, Constraints
from tfcompress.advise.search import SearchOptions

__all__ = ["OBJECTIVES", "AdviseError", "Constraints", "SearchOptions", "advise"]
