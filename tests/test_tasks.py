"""The task registry, the tolerance rule, and the combined report of --task=all."""

import numpy as np
import pytest

from tfcompress import tasks
from tfcompress.measure.latency import LatencyStats
from tfcompress.study import overview
from tfcompress.study.results import Results, Row, Status


def test_the_task_flag_lists_every_registered_task():
    from absl import flags

    import experiments.study  # noqa: F401  (defines the flags)

    assert sorted(flags.FLAGS["task"].parser.enum_values) == sorted([*tasks.names(), "all"])
    assert set(overview.ALL_TASKS) == set(tasks.names())


def test_each_task_has_a_default_model_among_its_builtins_and_a_described_metric():
    for name in tasks.names():
        task = tasks.get(name)
        assert task.default_model in task.builtin_models
        assert task.metric.description and tasks.metric(task.metric.name) is not None
    assert not tasks.metric("bits_per_char").higher_is_better
    assert tasks.metric("map50").fraction and not tasks.metric("psnr_db").fraction


def test_unknown_task_names_the_choices():
    with pytest.raises(ValueError, match="Unknown task 'segmentation'; choose one of: classification"):
        tasks.get("segmentation")


@pytest.mark.parametrize(
    "metric, value, reference, within",
    [
        ("accuracy", 0.965, 0.974, True),  # 0.9 points worse
        ("accuracy", 0.963, 0.974, False),  # 1.1 points worse
        ("accuracy", 0.990, 0.974, True),  # better is always within
        ("bits_per_char", 2.02, 2.00, True),  # 1% worse
        ("bits_per_char", 2.03, 2.00, False),  # 1.5% worse
        ("bits_per_char", 1.50, 2.00, True),
        ("psnr_db", 19.85, 20.0, True),  # 0.75% worse
        ("psnr_db", 19.7, 20.0, False),  # 1.5% worse
    ],
)
def test_tolerance_is_one_point_for_fractions_and_one_percent_otherwise(metric, value, reference, within):
    assert tasks.metric(metric).within(value, reference) is within


def test_each_tasks_per_example_contributions_recompute_its_metric():
    from tfcompress.data import Dataset
    from tfcompress.tasks import generative

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 200)
    digits = Dataset("d", np.zeros((1, 2)), labels[:1], np.zeros((200, 2)), labels, 10)
    accuracy = tasks.get("classification").score(rng.normal(size=(200, 10)), digits)
    np.testing.assert_array_equal(accuracy.examples.arrays["values"], accuracy.predictions == labels)
    text = Dataset("t", np.zeros((1, 8)), np.zeros((1, 8)), np.zeros((30, 8)), rng.integers(0, 5, (30, 8)), 5)
    bits = tasks.get("language").score(rng.normal(size=(30, 8, 5)), text)
    assert bits.examples.count == 30  # one value per window of 8 characters, not per character
    for name, score in [("classification", accuracy), ("language", bits)]:
        everyone_once = np.ones((1, score.examples.count))
        assert tasks.get(name).resampled(score.examples, everyone_once)[0] == pytest.approx(score.metric, rel=1e-12)
    images = rng.random((50, 28, 28, 1))
    noisy = np.clip(images + rng.normal(0, 0.1, images.shape), 0, 1)
    per_image = generative.psnr_per_image(noisy, images)  # the generative task's examples: PSNR is a mean of these
    assert per_image.shape == (50,) and np.mean(per_image) == generative.psnr(noisy, images)


def test_an_infinite_per_example_value_gives_no_interval_rather_than_a_nan():
    generative = tasks.get("generative")
    exact = tasks.Examples.of_mean([np.inf, 20.0, 21.0, 22.0])  # an image decoded exactly: infinite PSNR
    finite = tasks.Examples.of_mean([19.0, 20.0, 21.0, 22.0])
    intervals = generative.intervals(exact, finite, seed=0)
    assert intervals.metric is None and intervals.delta is None  # results.json is strict JSON: null, not NaN
    assert generative.intervals(finite, finite, seed=0).delta.to_list() == [0.0, 0.0]


def test_a_change_is_shown_with_its_interval_in_the_same_units():
    accuracy, psnr = tasks.metric("accuracy"), tasks.metric("psnr_db")
    assert accuracy.delta(0.974, 0.970, [-0.15, 0.95]) == "+0.40 pt [-0.15, +0.95]"
    assert psnr.delta(19.8, 20.0, [-0.3, -0.1]) == "-1.00% [-1.50, -0.50]"  # dB, shown as % of fp32's 20 dB
    assert accuracy.tolerance(0.97) == pytest.approx(0.01) and psnr.tolerance(20.0) == pytest.approx(0.2)


def _row(recipe, size, metric, median_ms, status=Status.OK, metric_name="accuracy"):
    latency = [LatencyStats(threads=1, median_ms=median_ms, p90_ms=median_ms, p99_ms=median_ms,
                            mean_ms=median_ms, std_ms=0.0, runs=10)]  # fmt: skip
    return Row(task="t", model="m", recipe=recipe, status=status, size_bytes=size, metric=metric,
               metric_name=metric_name, latency=latency if status is Status.OK else [])  # fmt: skip


def test_summary_picks_the_smallest_and_fastest_rows_within_tolerance():
    rows = [
        _row("fp32", 1000, 0.970, 1.0),
        _row("float16", 500, 0.970, 1.1),
        _row("int8", 250, 0.965, 0.3),  # within 1 point: the smallest and the fastest
        _row("prune_int8", 200, 0.940, 0.2),  # smaller and faster, but 3 points worse
        _row("int16x8", 100, None, 0.1, status=Status.FAILED),
    ]
    best = overview.best_rows(Results({}, {}, rows))
    assert best["size"].recipe == "int8" and best["latency"].recipe == "int8"
    outcome = overview.TaskOutcome("classification", Results({}, {}, rows), None, 12.0)
    headers, cells = overview.summary_table([outcome, overview.TaskOutcome("lora", None, "DataError: bad", 1.0)])
    line = dict(zip(headers, cells[0], strict=True))
    assert line["smallest within tolerance"] == "int8" and line["size x fp32"] == "0.250"
    assert line["speed-up"] == "3.33x (1t)" and line["rows ok / all"] == "4 / 5"
    assert line["metric"] == "accuracy (higher is better)" and line["tolerance"] == "1 pt"
    assert cells[1][0] == "lora" and "could not run" in cells[1]
    text = overview.to_markdown([outcome, overview.TaskOutcome("lora", None, "DataError: bad", 1.0)])
    assert "## classification" in text and "Could not run: DataError: bad" in text


def test_summary_says_when_the_tolerance_is_tighter_than_the_noise_of_fp32s_metric():
    rows = [_row("fp32", 1000, 0.970, 1.0), _row("int8", 250, 0.962, 0.3)]
    rows[0].metric_ci = [0.955, 0.984]  # +-1.45 points on a small test split: wider than the 1-point tolerance
    headers, cells = overview.summary_table([overview.TaskOutcome("classification", Results({}, {}, rows), None, 1.0)])
    line = dict(zip(headers, cells[0], strict=True))
    assert line["fp32 noise"] == "±1.45 pt" and line["tolerance"] == "1 pt (tighter than the noise)"
    assert line["smallest within tolerance"] == "int8"  # still chosen by the metric itself, 0.8 points worse
    rows[0].metric_ci = [0.966, 0.974]  # a large test split: +-0.4 points resolves the tolerance
    _, cells = overview.summary_table([overview.TaskOutcome("classification", Results({}, {}, rows), None, 1.0)])
    assert dict(zip(headers, cells[0], strict=True))["tolerance"] == "1 pt"
    psnr = [_row("fp32", 1000, 20.0, 1.0, metric_name="psnr_db")]
    psnr[0].metric_ci = [19.5, 20.5]  # +-2.5% of 20 dB against a 1% tolerance
    _, cells = overview.summary_table([overview.TaskOutcome("generative", Results({}, {}, psnr), None, 1.0)])
    line = dict(zip(headers, cells[0], strict=True))
    assert line["fp32 noise"] == "±2.50%" and line["tolerance"] == "1% (tighter than the noise)"
    text = overview.to_markdown([overview.TaskOutcome("generative", Results({}, {}, psnr), None, 1.0)])
    assert "1% (tighter than the noise)" in text  # in the table, beyond the legend's mention


def test_lower_is_better_metrics_pick_the_lowest(monkeypatch):
    rows = [
        _row("fp32", 1000, 2.00, 1.0, metric_name="bits_per_char"),
        _row("dynamic_range", 300, 2.01, 0.8, metric_name="bits_per_char"),
        _row("int8", 250, 3.10, 0.5, metric_name="bits_per_char"),  # far worse: excluded
    ]
    best = overview.best_rows(Results({}, {}, rows))
    assert best["size"].recipe == "dynamic_range" and best["latency"].recipe == "dynamic_range"


def test_run_all_runs_every_task_and_writes_one_report(tmp_path, monkeypatch):
    from tfcompress import study
    from tfcompress.study import runner

    seen = []

    def fake_run(config, progress=None):
        seen.append((config.task, config.model, config.output_dir, config.run.cache_dir))
        if config.task == "generative":
            raise study.StudyError("no data")
        metric = tasks.get(config.task).metric.name
        return Results({}, {}, [_row("fp32", 1000, 0.5, 1.0, metric_name=metric)])

    monkeypatch.setattr(runner, "run", fake_run)
    config = study.from_flat(output_dir=str(tmp_path / "all"), recipes=("fp32",))
    outcomes = overview.run_all(config)
    assert [o.task for o in outcomes] == list(overview.ALL_TASKS)
    assert [task for task, *_ in seen] == list(overview.ALL_TASKS)
    for task, model, output_dir, cache_dir in seen:
        assert model == tasks.get(task).default_model  # each task's own default, not the shared config's
        assert output_dir == str(tmp_path / "all" / task)
        assert cache_dir == str(tmp_path / "all" / "models")  # one cache: generative reuses the classifier
    failed = {o.task: o.error for o in outcomes if o.results is None}
    assert failed == {"generative": "StudyError: no data"}
    report = (tmp_path / "all" / "overview.md").read_text()
    for task in overview.ALL_TASKS:
        assert f"## {task}" in report


def test_task_all_refuses_a_model_or_recipes(capsys):
    from tests.conftest import study_cli

    code, _, err = study_cli(capsys, "--task=all", "--recipes=int8")
    assert code == 2 and "--task=all runs every task with its own model" in err


def _study(tmp_path, **kwargs):
    from tfcompress.study import from_flat, run

    defaults = dict(
        epochs=1, num_runs=3, rounds=1, min_time_s=0.0, warmup_runs=1, isolate=False, output_dir=str(tmp_path / "out")
    )
    return run(from_flat(**(defaults | kwargs)))


def test_detection_task_scores_coco_map_on_each_tflite(tmp_path, monkeypatch):
    from tfcompress.tasks import detection

    small = detection.load_mnist_detection(num_train=300, num_test=60, canvas=64, seed=0)
    monkeypatch.setattr(detection, "load_mnist_detection", lambda **_: small)
    results = _study(tmp_path, task="detection", recipes=("fp32", "int8"))
    for row in results.rows:
        assert row.ok, row.error
        assert row.metric_name == "map50" and 0.0 <= row.metric <= 1.0
        assert 0.0 <= row.extras["map"] <= row.metric  # mAP@[.5:.95] never exceeds mAP@.5
        assert row.agreement is None  # boxes have no top-1 to agree on
        assert row.metric_ci[0] <= row.metric <= row.metric_ci[1]  # canvases resampled, mAP@.5 recomputed
    fp32, int8 = results.rows
    low, high = int8.metric_delta_ci  # in points of mAP@.5, paired on the same resampled canvases
    assert low <= (int8.metric - fp32.metric) * 100 <= high and int8.delta_within_noise is (low <= 0 <= high)
    assert int8.size_bytes < 0.35 * fp32.size_bytes


@pytest.mark.slow
def test_generative_task_measures_the_tflite_decoder(tmp_path):
    results = _study(tmp_path, task="generative", recipes=("fp32", "float16"))
    fp32, float16 = results.rows
    assert fp32.ok and float16.ok, (fp32.error, float16.error)
    assert fp32.metric_name == "psnr_db" and 10.0 < fp32.metric < 60.0  # a blank image scores about 9 dB here
    assert float16.metric == pytest.approx(fp32.metric, abs=0.5)
    low, high = float16.metric_delta_ci  # in dB: the same test digits resampled for both decoders
    assert low <= float16.metric - fp32.metric <= high and fp32.metric_ci[0] <= fp32.metric <= fp32.metric_ci[1]
    assert float16.size_bytes < 0.6 * fp32.size_bytes
    cache = sorted(p.name for p in (tmp_path / "out" / "models").iterdir())
    assert any(name.startswith("vae-") for name in cache) and any(name.startswith("cnn-mnist5k") for name in cache)
    assert not any(name.startswith("vae_decoder") for name in cache)  # the VAE's own entry is not stored twice
    # The judge of sample quality reads real digits: "decoding" to the true images scores its test accuracy.
    from tfcompress.study import from_flat
    from tfcompress.study.cache import ModelCache

    task = tasks.get("generative")
    config = from_flat(task="generative", epochs=1, output_dir=str(tmp_path / "out"))
    dataset = task.load_data(config.setup(ModelCache(str(tmp_path / "out" / "models"))))
    perfect = task.score(dataset.y_test, dataset)
    assert perfect.metric == float("inf") and perfect.extras["sample_accuracy"] > 0.7
    # The fp32 row's sample accuracy is the judge's on its saved .tflite decoder's images, clipped to [0, 1].
    from tfcompress.measure.evaluate import run_tflite

    judge, labels = dataset.meta["classifier"], dataset.meta["labels"]
    decoded = np.clip(run_tflite(str(tmp_path / "out" / fp32.tflite_path), dataset.x_test), 0.0, 1.0)
    judged = np.argmax(judge.predict(decoded, verbose=0), axis=-1)
    assert fp32.extras["sample_accuracy"] == pytest.approx(np.mean(judged == labels))


def test_sample_accuracy_is_the_share_of_decoded_images_the_judge_reads_as_their_digit():
    from tfcompress._keras import keras
    from tfcompress.data import Dataset

    # A judge that reads the digit off the first row of pixels: class k's logit is pixel (0, k).
    judge = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, use_bias=False)])
    kernel = np.zeros((28 * 28, 10), np.float32)
    kernel[np.arange(10), np.arange(10)] = 1.0
    judge.layers[-1].set_weights([kernel])
    decoded = np.zeros((4, 28, 28, 1), np.float32)
    for image, digit in enumerate([3, 1, 4, 1]):
        decoded[image, 0, digit] = 1.0
    decoded[3, 0, 7] = 5.0  # brighter than white: shown clipped to 1.0, it ties with digit 1 and argmax keeps 1
    labels = np.array([3, 1, 5, 1])  # the third image is read as 4, not its digit 5
    dataset = Dataset("four", decoded, decoded, decoded, decoded, 0, meta={"labels": labels, "classifier": judge})
    score = tasks.get("generative").score(decoded, dataset)
    assert score.extras["sample_accuracy"] == 0.75


@pytest.mark.slow
def test_lora_task_adapts_the_pretrained_language_model(tmp_path):
    from tfcompress.tasks import adaptation, language

    assert tasks.get("lora").default_recipes[:2] == ("fp32", "lora")  # fp32 is the frozen base
    source, target = tmp_path / "source.txt", tmp_path / "target.txt"
    source.write_text(language.default_text()[:12_000], encoding="utf-8")
    target.write_text(adaptation.default_adapt_text()[:8_000], encoding="utf-8")
    results = _study(tmp_path, task="lora", text_file=str(source), adapt_text_file=str(target), context=16,
                     finetune_epochs=3, finetune_learning_rate=3e-3,
                     recipes=("fp32", "lora", "lora>dynamic_range", "finetune"))  # fmt: skip
    rows = {r.recipe: r for r in results.rows}
    for row in rows.values():
        assert row.ok, row.error
        assert row.metric_name == "bits_per_char"
    assert rows["lora"].extras["trainable_fraction"] <= 0.05
    assert rows["finetune"].extras["trainable_fraction"] == 1.0
    assert rows["lora"].metric < rows["fp32"].metric  # adapted toward the target text
    assert rows["lora>dynamic_range"].metric == pytest.approx(rows["lora"].metric, rel=0.02)
    assert rows["lora>dynamic_range"].size_bytes < 0.4 * rows["lora"].size_bytes
    cache = [p.name for p in (tmp_path / "out" / "models").iterdir()]
    assert len(cache) == 1 and cache[0].startswith("transformer-"), cache  # the pretrained model, stored once
