"""--strategy=multi_worker: two worker processes per training-time recipe, loopback only, equal weights."""

import json

import pytest

from tfcompress import recipes
from tfcompress.study import distribute, from_flat, job, run


def test_tf_config_names_every_worker_on_loopback_and_the_ports_are_free():
    ports = distribute.free_ports(3)
    assert len(set(ports)) == 3
    config = json.loads(distribute.tf_config(ports, 1))
    assert config["task"] == {"type": "worker", "index": 1}
    assert config["cluster"]["worker"] == [f"127.0.0.1:{p}" for p in ports]


def test_a_strategy_is_part_of_training_rows_keys_only():
    basis = {"model": "m"}
    key = {"strategy": "multi_worker", "workers": 2}
    assert job.row_key(basis, recipes.parse("int8"), key) == job.row_key(basis, recipes.parse("int8"))
    assert job.row_key(basis, recipes.parse("prune>int8"), key) != job.row_key(basis, recipes.parse("prune>int8"))
    assert from_flat(strategy="mirrored").run.strategy_key() == {"strategy": "mirrored", "workers": 1}


@pytest.mark.slow  # a study with 2-worker fine-tunes, about a minute: make test-slow and make bench run it
def test_two_workers_prune_to_the_target_with_equal_weights_and_qat_converts_to_int8(tmp_path):
    config = from_flat(output_dir=str(tmp_path), dataset="digits", epochs=1, finetune_epochs=1, num_runs=3, rounds=1,
                       min_time_s=0.0, warmup_runs=0, recipes=("prune:0.8", "qat"), strategy="multi_worker",
                       workers=2)  # fmt: skip
    rows = {r.recipe: r for r in run(config).rows}
    pruned, qat = rows["prune:0.8"], rows["qat"]
    assert pruned.ok and pruned.extras["sparsity"] == pytest.approx(0.8, abs=0.01)
    assert pruned.extras["workers"] == 2 and pruned.extras["workers_equal"] is True  # both workers, same weights
    assert qat.ok and qat.compute_dtype == "int8" and qat.extras["workers_equal"] is True
    assert qat.metric > 0.5  # trained, not broken by the collective


def test_multi_worker_needs_isolated_recipe_processes():
    from tfcompress.study.config import StudyError

    with pytest.raises(StudyError, match="drop --noisolate"):
        from_flat(strategy="multi_worker", isolate=False)
