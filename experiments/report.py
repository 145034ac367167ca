"""Re-renders the comparison table from a saved results.json.

python -m experiments.report --results=runs/latest/results.json --format=latex
"""

import sys

from absl import app, flags

from tfcompress.study.report import TABLE_FORMATS

_RESULTS = flags.DEFINE_string("results", "runs/latest/results.json", "A study's results.json.")
_FORMAT = flags.DEFINE_enum("format", "github", TABLE_FORMATS, "Table format (tabulate's names, or csv).")


def main(argv):
    del argv
    from tfcompress.study import report, results

    try:
        loaded = results.load(_RESULTS.value)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report.format_table(loaded, _FORMAT.value))
    return 0


if __name__ == "__main__":
    app.run(main)
