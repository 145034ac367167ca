"""The quantizer section's acceptance lines say yes exactly when a row meets its target."""

import pytest

from tfcompress.study import bench_quantizer as bq
from tfcompress.study.results import Results, Row, Status


def _results(task: str, rows: dict[str, tuple[int, float]], failed: tuple[str, ...] = ()) -> Results:
    out = []
    for recipe, (size, metric) in rows.items():
        status = Status.FAILED if recipe in failed else Status.OK
        error = "boom" if recipe in failed else None
        out.append(Row(task=task, model="m", recipe=recipe, status=status, size_bytes=size, metric=metric,
                       error=error, extras={"quantized_weights": "FC int4"}))  # fmt: skip
    return Results(config={}, environment={}, rows=out)


def _lines(blocks) -> list[str]:
    (block,) = blocks
    return [item if isinstance(item, str) else item["text"] for item in block["items"]]


def _language(static: tuple[int, float], four_bit: tuple[int, float]) -> Results:
    rows = {"fp32": (1000, 2.0), "int8": (340, 5.2), "q_int8": (340, 4.7), bq.SOFTMAX_ONLY: (360, 2.03)}
    return _results(
        "language", rows | {r: static for r in bq.LANGUAGE_STATIC} | {r: four_bit for r in bq.LANGUAGE_4BIT}
    )


@pytest.mark.parametrize(
    "static, four_bit, verdicts",
    [
        ((370, 2.017), (310, 2.09), ["yes", "yes", "yes", "yes"]),  # +0.85% at 0.37x; +4.5% at 0.31x
        ((410, 2.017), (310, 2.12), ["no", "yes", "yes", "no"]),  # 0.41x is over 0.40x; +6% is over 5%
        ((370, 2.03), (330, 2.09), ["yes", "no", "no", "yes"]),  # +1.5%; 0.33x is over 0.32x
    ],
)
def test_language_lines_judge_size_and_bits_per_char_against_fp32(static, four_bit, verdicts):
    lines = _lines(bq.language_checks(_language(static, four_bit)))
    first, four = lines[0], lines[len(bq.LANGUAGE_STATIC)]
    assert lines[1] == first.replace(bq.LANGUAGE_STATIC[0], bq.LANGUAGE_STATIC[1])  # both static rows are judged

    def verdict(line: str, after: str) -> str:
        return line.split(after + ": **")[1].split("**")[0]

    got = [verdict(first, "target <= 0.40"), verdict(first, "within 1%"), verdict(four, "target <= 0.32"),
           verdict(four, "within 5%")]  # fmt: skip
    assert got == verdicts, lines
    assert len([line for line in lines if line.startswith("For comparison")]) == 3


def test_a_failed_language_row_is_a_no_with_its_error():
    results = _language((370, 2.017), (310, 2.09))
    row = next(r for r in results.rows if r.recipe == bq.LANGUAGE_STATIC[0])
    row.status, row.error = Status.FAILED, "XNNPack failed"
    assert _lines(bq.language_checks(results))[0].endswith("(XNNPack failed): **no**.")


@pytest.mark.parametrize(
    "q_int8, verdict",
    [((1015, 0.972), ("yes", "yes")), ((1030, 0.972), ("no", "yes")), ((1000, 0.960), ("yes", "no"))],
)
def test_pair_lines_compare_the_quantizer_with_the_converter(q_int8, verdict):
    rows = {"fp32": (4000, 0.975), "int8": (1000, 0.975), "q_int8": q_int8, "dynamic_range": (1000, 0.975),
            "q_dynamic_int8": (990, 0.975), bq.INT4: (550, 0.974)}  # fmt: skip
    lines = _lines(bq.pair_checks(_results("classification", rows)))
    assert f"size within 2%: **{verdict[0]}**" in lines[0] and f"within 1 point: **{verdict[1]}**" in lines[0]
    assert "targets" not in lines[1] and "0.9900x its size" in lines[1]  # the dynamic pair is reported, not judged
    assert "0.138x fp32's size" in lines[2] and "FC int4" in lines[2]


def test_user_lines_check_every_row_and_that_fp32_is_the_file_itself(tmp_path):
    source = tmp_path / "model.tflite"
    source.write_bytes(b"TFL3 model")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "fp32.tflite").write_bytes(b"TFL3 model")
    results = _results("classification", {r: (10, 0.9) for r in bq.USER}, failed=("q_int8",))
    results.rows[0].tflite_path = "fp32.tflite"
    lines = _lines(bq.user_checks(results, str(source), str(tmp_path / "out")))
    assert lines[0].startswith("Every row ok: **no** (`q_int8` failed (boom))")
    assert lines[1].endswith("byte for byte: **yes**.")
    (tmp_path / "out" / "fp32.tflite").write_bytes(b"TFL3 other")
    assert _lines(bq.user_checks(results, str(source), str(tmp_path / "out")))[1].endswith("**no**.")
