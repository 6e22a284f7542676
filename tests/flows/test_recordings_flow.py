"""From Muse recordings to a prediction: a folder of recordings of four people becomes a dataset
(`python -m modules features`), TuningFlow and MLPipelineFlow train on it holding out whole subjects
(SPLIT_PROTOCOL=subject), and `python -m modules predict-recording` labels a new recording with the
champion. Real flows, tiny data and budgets, a throwaway store; no assertion on step names."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modules.data.loading import metadata_path
from modules.data.sample import STATES, _make_subjects, simulate_recording
from tests.flow_runs import PROJECT_ROOT, TINY_BUDGETS, make_flow_environment
from tests.unit.data.test_muse_exports import lsl_jitter, write_muse_lsl

pytestmark = [pytest.mark.flows, pytest.mark.slow]

SUBJECTS = 4  # one held out, three to train on: the fewest the subject split's CV folds accept
SECONDS = 6.0  # 10 rows a recording
START = 1_546_300_800.0


def write_recordings(folder: Path) -> list:
    """DIR/SUBJECT/LABEL/take1.csv: one jittered muse-lsl export per person and state; returns the people."""
    rng = np.random.default_rng(3)
    people = _make_subjects(rng, SUBJECTS)
    for k, person in enumerate(people):
        for state in STATES:
            t, signals = simulate_recording(rng, person, state, SECONDS, START + 600 * k)
            target = folder / f"S{k + 1}" / state
            target.mkdir(parents=True)
            write_muse_lsl(target / "take1.csv", t + lsl_jitter(len(t), seed=k), np.round(signals, 3))
    return people


def command(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modules", *map(str, args)],
        env={**os.environ, **env},
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_recordings_to_a_subject_split_champion_to_a_new_recordings_label(tmp_path: Path) -> None:
    import mlflow
    from mlflow.tracking import MlflowClient

    people = write_recordings(tmp_path / "recordings")
    data = tmp_path / "data" / "recs.csv"
    flows = make_flow_environment(
        tmp_path / "flows",
        DATA_PATH=str(data),
        SPLIT_PROTOCOL="subject",
        PROMOTION_MIN_MARGIN="0",
        # The new recording is labelled by the SVM's champion: the other families are not needed here.
        MODEL_FAMILIES="svm",
    )

    built = command(flows.env, "features", tmp_path / "recordings", "--out", data)
    assert built.returncode == 0, built.stderr
    assert "wrote 120 rows" in built.stdout and "12 recordings, 4 subjects" in built.stdout
    row_subject = json.loads(metadata_path(data).read_text())["row_subject"]

    flows.run("tuning_flow.py", **TINY_BUDGETS)
    flows.run("ml_pipeline_flow.py")

    mlflow.set_tracking_uri(flows.tracking_uri)
    mlflow.set_registry_uri(flows.tracking_uri)
    try:
        client = MlflowClient(flows.tracking_uri)
        experiment = client.get_experiment_by_name("flow-tests")
        parents = client.search_runs(
            [experiment.experiment_id], filter_string="tags.`split.protocol` = 'subject'"
        )
        tuning = [run for run in parents if run.info.run_name.startswith("TuningFlow/")]
        assert len(tuning) == 1
        split = mlflow.artifacts.load_dict(f"runs:/{tuning[0].info.run_id}/split.json")
        champion = client.get_model_version_by_alias("recs-svm", "champion")
    finally:
        mlflow.set_tracking_uri(None)
        mlflow.set_registry_uri(None)

    # Held out by subject: the split's subjects are the recordings' subjects, none on both sides.
    assert split["protocol"] == "subject" and split["subjects"] == row_subject
    subjects = np.asarray(split["subjects"])
    train, test = set(subjects[split["train_index"]]), set(subjects[split["test_index"]])
    assert train.isdisjoint(test) and len(test) >= 1 and len(train) >= 3
    assert train | test == {f"S{k}" for k in range(1, SUBJECTS + 1)}

    # A new recording of a held-out person, labelled by the champion of the model trained on recs.csv.
    person = int(sorted(test)[0][1:]) - 1
    t, signals = simulate_recording(np.random.default_rng(99), people[person], "NEUTRAL", 5.0, START)
    new = write_muse_lsl(tmp_path / "new.csv", t + lsl_jitter(len(t), seed=9), np.round(signals, 3))
    predicted = command(
        flows.env, "predict-recording", new, "--data-path", data, "--out", tmp_path / "windows.csv"
    )
    assert predicted.returncode == 0, predicted.stderr
    lines = predicted.stdout.splitlines()
    assert lines[1] == f"8 windows labelled by recs-svm v{champion.version}:"
    overall = next(line for line in lines if line.startswith("overall: "))
    assert overall.split()[1] in STATES and "of 8 windows" in overall
    assert (tmp_path / "windows.csv").read_text().count("\n") == 9
