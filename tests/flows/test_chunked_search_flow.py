"""TuningFlow with SEARCH_CHUNKS=2: each family's search fans out into chunks, the join coordinates."""

from __future__ import annotations

from typing import Any

import pytest

from tests.flow_runs import TINY_BUDGETS, FlowEnvironment, make_flow_environment

pytestmark = [pytest.mark.flows, pytest.mark.slow]


@pytest.fixture(scope="module")
def chunked_env(tmp_path_factory: pytest.TempPathFactory) -> FlowEnvironment:
    # The logistic regression searches through the same halving code as the SVM: two families suffice.
    return make_flow_environment(
        tmp_path_factory.mktemp("chunked"),
        SPLIT_PROTOCOL="random",
        MODEL_FAMILIES="svm,dnn",
        SEARCH_CHUNKS="2",
    )


@pytest.fixture(scope="module")
def chunked_run(chunked_env: FlowEnvironment) -> Any:
    return chunked_env.run("tuning_flow.py", **TINY_BUDGETS)


def test_each_familys_search_runs_as_one_branch_per_chunk(chunked_run: Any) -> None:
    branches = sorted((t.data.family, t.data.chunk, t.data.chunks) for t in chunked_run["tune"])
    assert branches == [("dnn", 0, 2), ("dnn", 1, 2), ("svm", 0, 2), ("svm", 1, 2)]
    # The SVM's four candidates were dealt two per chunk; the DNN's two trials one per chunk.
    svm_parts = {t.data.chunk: t.data.search for t in chunked_run["tune"] if t.data.family == "svm"}
    assert [part["n_candidates"] for part in svm_parts.values()] == [2, 2]
    dnn_parts = [t.data.search for t in chunked_run["tune"] if t.data.family == "dnn"]
    assert sorted(part["max_trials"] for part in dnn_parts) == [1, 1]
    assert len({part["seed"] for part in dnn_parts}) == 2  # each chunk draws its own trials


def test_the_join_chooses_the_svm_in_a_final_round_on_all_training_rows(chunked_run: Any) -> None:
    join = chunked_run["join"].task.data
    search = join.searches["svm"]
    train_rows = join.data_summary["train_rows"]
    final = [c for c in search["candidates"] if c["chunk"] is None]
    chunk_finalists = [params for chunk in search["chunks"] for params in chunk["finalists"]]
    # The best third of the chunks' finalists (at least one) go to the round on all training rows.
    assert len(final) == max(1, -(-len(chunk_finalists) // 3))
    assert all(c["params"] in chunk_finalists for c in final)
    assert {c["n_resources"] for c in final} == {train_rows}
    chunk_last_rows = {c["n_resources"] for c in search["candidates"] if c["chunk"] is not None}
    assert max(chunk_last_rows) <= train_rows // 3
    winner = max(final, key=lambda c: c["mean_score"])
    assert join.best["svm"]["params"] == winner["params"] == search["best_params"]
    assert join.best["svm"]["cv_accuracy"] == winner["mean_score"]


def test_the_dnn_keeps_the_best_chunks_trial_and_its_cross_validation(chunked_run: Any) -> None:
    join = chunked_run["join"].task.data
    search = join.searches["dnn"]
    assert sorted(t["trial_id"].split("-")[0] for t in search["trials"]) == ["1", "2"]
    best_chunk = max(search["chunks"], key=lambda c: c["best_val_accuracy"])
    assert search["best_trial_id"] == best_chunk["best_trial_id"]
    assert join.best["dnn"]["val_accuracy"] == best_chunk["best_val_accuracy"]
    assert join.best["dnn"]["cv_accuracy"] == best_chunk["cv_mean"]
    # What MLPipelineFlow reads has the shape of an unchunked search.
    assert set(join.best["dnn"]) == {"params", "val_accuracy", "cv_accuracy", "cv_std", "cv_folds", "epochs"}
    assert set(join.best["svm"]) == {"params", "cv_accuracy", "cv_std", "cv_folds"}


def test_mlflow_has_a_run_per_chunk_and_the_merged_search_under_the_familys_name(
    chunked_env: FlowEnvironment, chunked_run: Any
) -> None:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(chunked_env.tracking_uri)
    parent_id = chunked_run["start"].task.data.mlflow_run_id
    parent = client.get_run(parent_id)
    assert parent.data.params["search_chunks"] == "2"
    runs = client.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    by_name = {run.info.run_name: run for run in runs}
    expected = {f"tune_{family}{part}" for family in ("svm", "dnn") for part in ("", "_1of2", "_2of2")}
    assert expected <= set(by_name)
    assert {by_name[name].info.status for name in expected} == {"FINISHED"}
    best = chunked_run["join"].task.data.best
    for family in ("svm", "dnn"):
        assert by_name[f"tune_{family}"].data.metrics["cv_accuracy_mean"] == pytest.approx(
            best[family]["cv_accuracy"]
        )
