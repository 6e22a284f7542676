"""TuningFlow and MLPipelineFlow end to end: real Metaflow runs, real training, real MLflow store."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modules.data.loading import load_dataset
from modules.models.families import family_names

# The flows tune and train every registered family (MODEL_FAMILIES is not set in these runs).
FAMILIES = family_names()

SMALL_BUDGETS = {"svm_max_candidates": 2, "dnn_max_trials": 1, "dnn_max_epochs": 3}
# Tests of the gate and of the model names, which every family shares: the two fast families
# (the session's runs above cover all three, the DNN included).
FAST_FAMILIES = {"MODEL_FAMILIES": "svm,logistic"}

pytestmark = [pytest.mark.flows, pytest.mark.slow]


def _runs_by_name(client: Any, experiment_name: str) -> dict[str, Any]:
    experiment = client.get_experiment_by_name(experiment_name)
    return {run.info.run_name: run for run in client.search_runs([experiment.experiment_id], max_results=500)}


def _children(client: Any, experiment_id: str, parent_id: str) -> list[Any]:
    return client.search_runs([experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'")


def test_tuning_flow_tracks_a_parent_run_with_nested_trials(tuning_run, mlflow_client):
    data = tuning_run.data
    best = data.best
    assert {"C", "kernel"} <= set(best["svm"]["params"])
    assert {"layers", "learning_rate", "batch_size"} <= set(best["dnn"]["params"])
    assert best["dnn"]["epochs"] >= 1

    parent = mlflow_client.get_run(data.mlflow_run_id)
    assert parent.info.run_name == f"TuningFlow/{tuning_run.id}"
    assert parent.info.status == "FINISHED"
    for tag in ("metaflow.pathspec", "git.commit", "dataset.digest", "dataset.source", "split.protocol"):
        assert parent.data.tags[tag], tag
    assert parent.data.tags["dataset.source"] == "sample"
    assert parent.data.tags["split.protocol"] == data.split["protocol"] == "random"
    # The metrics in MLflow equal the flow's artifacts.
    assert parent.data.metrics["svm_cv_accuracy"] == pytest.approx(best["svm"]["cv_accuracy"])
    assert parent.data.metrics["dnn_val_accuracy"] == pytest.approx(best["dnn"]["val_accuracy"])

    experiment_id = parent.info.experiment_id
    steps = {run.info.run_name: run for run in _children(mlflow_client, experiment_id, parent.info.run_id)}
    assert list(best) == list(data.searches) == FAMILIES
    assert {f"tune_{family}" for family in FAMILIES} <= set(steps)
    for family in FAMILIES:
        assert parent.data.metrics[f"{family}_cv_accuracy"] == pytest.approx(best[family]["cv_accuracy"])
        tuned = steps[f"tune_{family}"].data.metrics["cv_accuracy_mean"]
        assert tuned == pytest.approx(data.searches[family]["cv_mean"])
    assert best["logistic"]["params"]["C"] > 0
    trials = _children(mlflow_client, experiment_id, steps["tune_dnn"].info.run_id)
    assert len(trials) == len(data.searches["dnn"]["trials"]) >= 1
    history = mlflow_client.get_metric_history(trials[0].info.run_id, "val_accuracy")
    assert len(history) >= 1
    assert all(trial.data.params.get("learning_rate") for trial in trials)


def card_content(task: Any, card_id: str) -> str:
    """The components of a Metaflow card, decoded from the base64 JSON its HTML embeds."""
    from metaflow.cards import get_cards

    html = get_cards(task, id=card_id)[0].get()
    payload = re.search(r'__MF_DATA__\[".*?"\] = "([^"]+)"', html).group(1)
    return base64.b64decode(payload).decode()


def test_tuning_flow_card_shows_the_search(tuning_run):
    content = card_content(tuning_run["join"].task, "tuning")
    assert "SVM candidates" in content
    assert "DNN trials" in content
    assert "Logistic regression candidates" in content
    assert '"type": "image"' in content


def _held_out(run: Any) -> tuple[Any, np.ndarray]:
    data = run.data
    dataset = load_dataset(data.data_path, data.label_column)
    rows = np.asarray(data.split["test_index"])
    return dataset.features.iloc[rows], dataset.labels.iloc[rows].to_numpy()


def test_training_registers_champions_that_predict_raw_rows(training_run, mlflow_client):
    import mlflow

    X_test, y_test = _held_out(training_run)
    mlflow.set_tracking_uri(mlflow_client.tracking_uri)
    mlflow.set_registry_uri(mlflow_client.tracking_uri)
    assert list(training_run.data.models) == FAMILIES
    for family in FAMILIES:
        name = f"eeg-emotion-{family}"
        champion = mlflow_client.get_model_version_by_alias(name, "champion")
        assert str(champion.version) == training_run.data.models[family]["version"]
        model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
        predictions = np.asarray(model.predict(X_test)).astype(str)
        assert set(predictions) <= {"NEGATIVE", "NEUTRAL", "POSITIVE"}
        logged = mlflow_client.get_run(champion.run_id).data.metrics["test_accuracy"]
        assert float(np.mean(predictions == y_test)) == pytest.approx(logged, abs=1e-9)
        # The signature names the raw CSV columns.
        inputs = model.metadata.get_input_schema().input_names()
        assert inputs == list(X_test.columns)


def test_training_writes_reports_and_closes_its_parent_run(training_run, mlflow_client, flow_env):
    parent = mlflow_client.get_run(training_run.data.mlflow_run_id)
    assert parent.info.status == "FINISHED"
    artifacts = {a.path for a in mlflow_client.list_artifacts(parent.info.run_id)}
    assert {"training_report.html", "promotion.json"} <= artifacts
    promotion = json.loads(Path(flow_env.root / "reports" / "promotion.json").read_text())
    assert [row["family"] for row in promotion["families"]] == FAMILIES
    content = card_content(training_run["report"].task, "report")
    for family in FAMILIES:
        assert f"confusion_matrix_{family}.png" in content


def test_worse_run_becomes_challenger_but_not_champion(training_run, worse_training_run, mlflow_client):
    for family in FAMILIES:
        name = f"eeg-emotion-{family}"
        first = training_run.data.models[family]
        worse = worse_training_run.data.models[family]
        assert worse["version"] != first["version"]
        assert worse["report"]["evaluation"]["accuracy"] <= first["report"]["evaluation"]["accuracy"]
        assert str(mlflow_client.get_model_version_by_alias(name, "challenger").version) == worse["version"]
        assert str(mlflow_client.get_model_version_by_alias(name, "champion").version) == first["version"]
    decisions = {p["family"]: p for p in worse_training_run.data.promotions}
    for decision in decisions.values():
        assert not decision["promoted"]
        assert decision["reason"].startswith("not promoted: ")
        # Either the floor or the champion said no; the failing check carries its figures.
        failed = [c for c in decision["checks"] if c["passed"] is False]
        assert failed and failed[0]["name"] in ("beats_baseline", "beats_champion")


def test_training_reports_baseline_interval_leak_gap_and_recordings(training_run, mlflow_client):
    # What the run wrote to reports/promotion.json (a later run in this session overwrites the file).
    promotion = training_run.data.promotion_summary
    for row in promotion["families"]:
        assert row["promoted"], row["reason"]
        assert row["baseline"]["strategy"] == "most_frequent"
        assert row["margin_over_baseline"] == pytest.approx(
            row["test_accuracy"] - row["baseline"]["accuracy"]
        )
        assert row["margin_over_baseline"] >= 0.10
        interval = row["interval"]
        assert interval["low"] <= row["test_accuracy"] <= interval["high"]
        assert row["cross_validation"]["folds"] == 3
        # Recordings are known in the sample: the random split's leak gap and per-recording table.
        assert row["leak_gap"]["random_accuracy"] == pytest.approx(row["test_accuracy"])
        assert row["per_recording"] and all(r["recording"].startswith("S") for r in row["per_recording"])
        assert {c["name"] for c in row["checks"]} == {
            "data_verified",
            "beats_baseline",
            "same_schema",
            "beats_champion",
        }
        version = mlflow_client.get_model_version(row["model_name"], row["new_version"])
        assert version.tags["gate.promoted"] == "true"
        assert version.tags["gate.beats_baseline"].startswith("passed: ")
        assert version.tags["schema.n_columns"] == "2548"
    step = mlflow_client.get_run(training_run.data.models["svm"]["run_id"])
    for metric in (
        "test_accuracy",
        "baseline_accuracy",
        "test_accuracy_ci_low",
        "cv_accuracy_mean",
        "leak_gap",
    ):
        assert metric in step.data.metrics, metric
    content = card_content(training_run["report"].task, "report")
    for text in ("majority baseline", "95% interval", "leak gap", "Per held-out recording", "beats_baseline"):
        assert text in content, text


def test_unknown_tuning_run_id_fails_with_one_clear_line(flow_env, tuning_run):
    with flow_env.runner("ml_pipeline_flow.py").run(tuning_flow_run_id="no-such-run") as running:
        assert running.status == "failed"
        output = running.stdout + running.stderr
    assert "error: tuning-flow-run-id 'no-such-run': no TuningFlow run with that id" in output
    assert "Traceback" not in output


def test_a_failing_training_step_marks_the_parent_run_failed(flow_env, tuning_run, mlflow_client):
    bad = '{"svm": {"kernel": "no-such-kernel"}}'
    with flow_env.runner("ml_pipeline_flow.py").run(
        tuning_flow_run_id=tuning_run.id, params_override=bad
    ) as running:
        assert running.status == "failed"
        parent_id = running.run["start"].task.data.mlflow_run_id
        output = running.stdout + running.stderr
    parent = mlflow_client.get_run(parent_id)
    assert parent.info.status == "FAILED"
    steps = _children(mlflow_client, parent.info.experiment_id, parent_id)
    assert {run.info.status for run in steps if run.info.run_name == "train_svm"} == {"FAILED"}
    # The DNN branch, stopped by Metaflow, is closed by the flow's exit hook.
    assert {run.info.status for run in steps} <= {"FAILED", "KILLED", "FINISHED"}
    assert "marked FAILED" in output


def test_resuming_a_training_run_registers_only_what_it_trained(
    flow_env, training_run, worse_training_run, mlflow_client
):
    name = "eeg-emotion-svm"

    def versions() -> dict[str, str]:
        return {v.version: v.run_id for v in mlflow_client.search_model_versions(f"name='{name}'")}

    before = versions()
    # Re-running the join reuses the versions registered for the very models it evaluated.
    with flow_env.runner("ml_pipeline_flow.py").resume(
        step_to_rerun="join", origin_run_id=training_run.id
    ) as running:
        assert running.status == "successful", running.stdout + running.stderr
        rejoined = running.run
    assert versions() == before
    assert rejoined.data.models["svm"]["version"] == training_run.data.models["svm"]["version"]
    parent = mlflow_client.get_run(rejoined.data.mlflow_run_id)
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == parent.data.tags["metaflow.pathspec"] == rejoined.pathspec

    # Re-training makes new models: exactly one new SVM version, whose source is the new run.
    with flow_env.runner("ml_pipeline_flow.py").resume(
        step_to_rerun="train", origin_run_id=training_run.id
    ) as running:
        assert running.status == "successful", running.stdout + running.stderr
        retrained = running.run
    after = versions()
    new = set(after) - set(before)
    assert len(new) == 1
    assert (
        after[new.pop()]
        == retrained.data.models["svm"]["run_id"]
        != training_run.data.models["svm"]["run_id"]
    )


def test_predict_scores_a_csv_with_the_champion(flow_env, training_run, tmp_path):
    import subprocess
    import sys

    import pandas as pd

    out = tmp_path / "predictions.csv"
    command = [sys.executable, "-m", "modules", "predict", str(flow_env.data_path), "--out", str(out)]
    result = subprocess.run(command, env=flow_env.env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "with models:/eeg-emotion-svm@champion, accuracy" in result.stdout
    scored = pd.read_csv(out)
    assert len(scored) == len(load_dataset(flow_env.data_path).labels)
    assert set(scored["predicted_label"]) <= {"NEGATIVE", "NEUTRAL", "POSITIVE"}

    missing = [*command[:-1], str(tmp_path / "other.csv"), "--model", "models:/no-such-model@champion"]
    result = subprocess.run(missing, env=flow_env.env, capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "error: no champion for no-such-model: no model of that name is registered" in result.stderr


def test_the_workflow_summary_reads_the_promotion_file(flow_env, worse_training_run, tmp_path):
    import subprocess
    import sys

    from tests.flow_runs import PROJECT_ROOT

    summary = tmp_path / "summary.md"
    script = PROJECT_ROOT / ".github" / "scripts" / "pipeline_summary.py"
    promotion = flow_env.root / "reports" / "promotion.json"
    result = subprocess.run(
        [sys.executable, str(script), "--promotion", str(promotion), "--summary", str(summary)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    text = summary.read_text()
    for row in json.loads(promotion.read_text())["families"]:
        assert f"| {row['family']} | `{row['model_name']}` | v{row['new_version']} |" in text
        assert row["reason"] in text


def _write_shuffled_copy(source: Path, out: Path, seed: int = 0) -> None:
    import pandas as pd

    frame = pd.read_csv(source)
    frame["label"] = np.random.default_rng(seed).permutation(frame["label"].to_numpy())
    frame.to_csv(out, index=False)


def test_a_model_trained_on_shuffled_labels_is_never_promoted(flow_env, mlflow_client):
    shuffled = flow_env.root / "shuffled-labels.csv"
    _write_shuffled_copy(flow_env.data_path, shuffled)
    tuning = flow_env.run("tuning_flow.py", settings=FAST_FAMILIES, data_path=str(shuffled), **SMALL_BUDGETS)
    training = flow_env.run("ml_pipeline_flow.py", tuning_flow_run_id=tuning.id)
    assert [promotion["family"] for promotion in training.data.promotions] == ["svm", "logistic"]
    for promotion in training.data.promotions:
        # Fresh names from the file: there is no champion to beat, only the baseline.
        assert promotion["model_name"].startswith("shuffled-labels-")
        assert not promotion["promoted"], promotion["reason"]
        assert "below baseline" in promotion["reason"]
        alias = mlflow_client.get_model_version_by_alias(promotion["model_name"], "challenger")
        assert str(alias.version) == promotion["new_version"]
        with pytest.raises(Exception, match="champion"):
            mlflow_client.get_model_version_by_alias(promotion["model_name"], "champion")


def test_two_datasets_in_one_store_keep_their_own_models_and_champions(flow_env, training_run, mlflow_client):
    import pandas as pd
    from sklearn.datasets import load_wine

    wine = load_wine(as_frame=True)
    frame = wine.data.assign(label=wine.target.map(dict(enumerate(wine.target_names))))
    path = flow_env.root / "wine.csv"
    frame.to_csv(path, index=False)
    champions_before = {
        f: mlflow_client.get_model_version_by_alias(f"eeg-emotion-{f}", "champion").version for f in FAMILIES
    }
    tuning = flow_env.run("tuning_flow.py", settings=FAST_FAMILIES, data_path=str(path), **SMALL_BUDGETS)
    training = flow_env.run("ml_pipeline_flow.py", tuning_flow_run_id=tuning.id)
    names = {p["model_name"] for p in training.data.promotions}
    assert names == {"wine-svm", "wine-logistic"}
    svm = next(p for p in training.data.promotions if p["family"] == "svm")
    assert svm["promoted"], svm["reason"]
    for family, version in champions_before.items():
        assert (
            mlflow_client.get_model_version_by_alias(f"eeg-emotion-{family}", "champion").version == version
        )
    assert mlflow_client.get_registered_model("wine-svm").latest_versions is not None
    assert len(pd.read_csv(path).columns) == 14


def test_production_refuses_the_synthetic_sample_before_tracking_anything(flow_env, mlflow_client):
    env = {**flow_env.env, "PIPELINE_ENV": "production", "MLFLOW_EXPERIMENT_NAME": "production-refusals"}
    with flow_env.runner("tuning_flow.py", env=env).run(**SMALL_BUDGETS) as running:
        assert running.status == "failed"
        output = running.stdout + running.stderr
    assert "is the synthetic sample" in output
    assert "Traceback" not in output

    # A user file whose digest is not the one the manifest pins.
    user_file = flow_env.root / "pinned-elsewhere.csv"
    user_file.write_bytes(flow_env.data_path.read_bytes())
    manifest = flow_env.root / "manifest.json"
    manifest.write_text(json.dumps({"file": user_file.name, "sha256": "0" * 64}))
    with flow_env.runner("tuning_flow.py", env={**env, "DATA_MANIFEST": str(manifest)}).run(
        data_path=str(user_file), **SMALL_BUDGETS
    ) as running:
        assert running.status == "failed"
        output = running.stdout + running.stderr
    assert "but manifest.json pins 000000000000..." in output or "pins 000000000000" in output
    assert "Traceback" not in output
    assert mlflow_client.get_experiment_by_name("production-refusals") is None
