"""modules.serving.recording: a Muse recording -> labels over time and an overall label, with the
champion of a real SQLite MLflow registry (a small logistic regression on simulated recordings)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from modules.data import eeg_features as ef
from modules.data.muse_exports import read_muse_export
from modules.data.sample import STATES, _make_subjects, simulate_recording
from modules.errors import DataValidationError
from modules.models.preprocessing import build_preprocessor
from modules.serving import recording as recording_module
from modules.serving.prediction_log import read_prediction_log
from modules.serving.recording import (
    label_runs,
    overall_label,
    predict_recording,
    window_starts,
)
from modules.settings import get_settings, load_settings
from modules.tracking import client as tracking
from tests.commands import exit_code
from tests.unit.data.test_muse_exports import lsl_jitter, write_mind_monitor, write_muse_lsl

START = 1_546_300_800.0
MODEL_NAME = "eeg-emotion-svm"  # the champion `python -m modules predict-recording` asks for by default


def people() -> list:
    return _make_subjects(np.random.default_rng(11), 2)


def recording(state: str, seconds: float, seed: int, person: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A new simulated recording of one of the people the model was trained on."""
    t, signals = simulate_recording(np.random.default_rng(seed), people()[person], state, seconds, START)
    return t, np.round(signals, 3)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A SQLite store whose eeg-emotion-svm champion was trained on 2 people x 3 states x 2 recordings."""
    root = tmp_path_factory.mktemp("registry")
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "MLFLOW_ARTIFACT_ROOT": str(root / "artifacts"),
        "MLFLOW_EXPERIMENT_NAME": "recording-tests",
        "REPORTS_DIR": str(root / "reports"),
        "PREDICTION_LOG_PATH": str(root / "predictions.db"),
    }
    settings = load_settings(root=root, env=env)
    tracking.connect(settings)
    tracking.ensure_experiment(settings)
    parts = []
    for person in range(2):
        for k, state in enumerate(STATES):
            for take in range(2):
                t, signals = recording(state, 6.0, seed=100 + 10 * person + 2 * k + take, person=person)
                parts.append(ef.recording_to_rows(t, signals, state))
    rows = pd.concat(parts, ignore_index=True)
    X, y = rows[ef.feature_names()], rows["label"].to_numpy()
    pipeline = Pipeline([("preprocess", build_preprocessor()), ("clf", LogisticRegression(max_iter=2000))])
    pipeline.fit(X, y)
    with mlflow.start_run():
        uri = tracking.log_sklearn_model(pipeline, X.head(3))
    version = tracking.register_model(uri, MODEL_NAME, idempotency_key="recording-tests/1", tags={})
    MlflowClient().set_registered_model_alias(MODEL_NAME, "champion", version)
    yield env
    mlflow.set_tracking_uri(None)
    mlflow.set_registry_uri(None)


@pytest.fixture
def cli(store: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    """Runs `python -m modules predict-recording ARGS` in-process against the store: (exit code, out, err)."""
    for name in ("DATA_PATH", "MODEL_NAME_PREFIX"):
        monkeypatch.delenv(name, raising=False)
    for name, value in store.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = exit_code(recording_module.cli, [str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    yield run
    get_settings.cache_clear()


def model(store: dict[str, str]):
    return tracking.load_model(f"models:/{MODEL_NAME}@champion")


# --------------------------------------------------------------------------- window times
def test_window_starts_follow_the_rows_across_a_gap(tmp_path: Path) -> None:
    t, signals = recording("NEUTRAL", 8.0, seed=1)
    keep = np.ones(len(t), dtype=bool)
    keep[1024 : 1024 + 512] = False  # 2 s lost after 4 s of signal
    path = write_muse_lsl(tmp_path / "gap.csv", (t + lsl_jitter(len(t)))[keep], signals[keep])
    export = read_muse_export(path)
    starts, segments = window_starts(export)

    # 4 s before the gap: seven 1 s windows (the last 0.9 s or longer) from 0.0 s, so 6 rows; 2 s after
    # it (resuming 6 s in): windows at 6.0, 6.5 and 7.0 s, so 2 rows.
    assert len(starts) == len(ef.export_to_rows(export, "NEUTRAL")) == 8
    np.testing.assert_allclose(starts, [0.0, 0.5, 1.0, 1.5, 2.0, 2.5, 6.0, 6.5], atol=0.01)
    assert segments.tolist() == [0] * 6 + [1] * 2


# --------------------------------------------------------------------------- summaries, no model
def windows_of(labels: list[str], probability_of_first: list[float], segments: list[int] | None = None):
    frame = pd.DataFrame(
        {
            "start_s": 0.5 * np.arange(len(labels)),
            "segment": segments or [0] * len(labels),
            "predicted_label": labels,
        }
    )
    p = np.asarray(probability_of_first)
    frame["proba_A"], frame["proba_B"] = p, 1 - p
    frame["probability"] = np.maximum(p, 1 - p)
    return frame


def test_overall_label_share_and_mean_probability() -> None:
    windows = windows_of(["A", "A", "B", "A"], [0.9, 0.7, 0.2, 0.6])
    overall = overall_label(windows, ["A", "B"])
    assert (overall.label, overall.windows, overall.share) == ("A", 3, 0.75)
    # The class's probability averaged over every window, the B window included.
    assert overall.mean_probability == pytest.approx((0.9 + 0.7 + 0.2 + 0.6) / 4)


def test_a_tie_goes_to_the_higher_mean_probability() -> None:
    windows = windows_of(["A", "B", "A", "B"], [0.6, 0.1, 0.55, 0.2])
    assert overall_label(windows, ["A", "B"]).label == "B"  # mean probability of B 0.64, of A 0.36
    assert overall_label(windows.drop(columns=["proba_A", "proba_B", "probability"]), None).label == "A"


def test_runs_of_one_label_are_condensed_and_broken_at_gaps() -> None:
    windows = windows_of(
        ["A"] * 3 + ["B"] * 2 + ["B"] * 2, [0.9, 0.8, 0.7, 0.4, 0.2, 0.1, 0.3], [0] * 5 + [1] * 2
    )
    windows.loc[5:, "start_s"] = [6.0, 6.5]
    runs = label_runs(windows)
    assert [(a, b, label, n) for a, b, label, n, _ in runs] == [
        (0.0, 1.5, "A", 3),
        (1.5, 2.5, "B", 2),
        (6.0, 7.0, "B", 2),
    ]
    assert runs[0][4] == pytest.approx(0.8) and runs[1][4] == pytest.approx(0.7)


# --------------------------------------------------------------------------- with the champion
@pytest.mark.slow
@pytest.mark.parametrize("state", STATES)
def test_a_recording_of_a_known_state_is_labelled_that_state(store, tmp_path: Path, state: str) -> None:
    t, signals = recording(state, 12.0, seed=7 + STATES.index(state))
    path = write_muse_lsl(tmp_path / "rec.csv", t + lsl_jitter(len(t), seed=3), signals)
    result = predict_recording(read_muse_export(path), model(store), model_label=f"{MODEL_NAME} v1")

    windows = result.windows
    assert len(windows) == 22  # 1 s windows every 0.5 s, the last from 11.0 s: 23 windows, 22 pairs
    np.testing.assert_allclose(windows["start_s"], 0.5 * np.arange(22), atol=0.01)
    assert list(windows.columns) == [
        "start_s",
        "segment",
        "predicted_label",
        "probability",
        *(f"proba_{s}" for s in sorted(STATES)),
    ]
    np.testing.assert_allclose(windows[[f"proba_{s}" for s in STATES]].sum(axis=1), 1.0)
    assert result.overall.label == state
    assert result.overall.share == pytest.approx(np.mean(windows["predicted_label"] == state))
    assert result.overall.share > 0.5
    assert result.overall.mean_probability == pytest.approx(windows[f"proba_{state}"].mean())


@pytest.mark.slow
def test_the_command_prints_labels_over_time_and_writes_the_table(store, cli, tmp_path: Path) -> None:
    t, signals = recording("NEGATIVE", 20.0, seed=21, person=1)
    path = write_mind_monitor(tmp_path / "mind.csv", t, signals, seed=2)
    out = tmp_path / "tables" / "windows.csv"

    code, printed, err = cli(path, "--out", out)

    assert code == 0, err
    lines = printed.splitlines()
    assert lines[0].startswith(f"{path}: Mind Monitor CSV, 20.0 s in 1 segment")
    assert lines[1] == f"38 windows labelled by {MODEL_NAME} v1:"
    table = pd.read_csv(out)
    assert len(table) == 38 and table["start_s"].iloc[-1] == pytest.approx(18.5, abs=0.05)
    # More windows than are listed one by one: runs of one label that tile the recording.
    runs = lines[2:-2]
    assert 1 <= len(runs) < 38
    counts = [int(line.split("(")[1].split(" window")[0]) for line in runs]
    assert sum(counts) == 38
    assert runs[0].split()[0] == "0.0-" + runs[0].split()[0].split("-")[1]
    majority = table["predicted_label"].value_counts()
    overall = majority.index[0]
    share = majority.iloc[0] / 38
    assert lines[-2] == (
        f"overall: {overall} ({majority.iloc[0]} of 38 windows, {100 * share:.0f} %; "
        f"mean probability {table[f'proba_{overall}'].mean():.2f})"
    )
    assert overall == "NEGATIVE"
    assert lines[-1] == f"per-window table: {out}"

    # Logged like a `make predict` batch: the rows scored, their labels and the version.
    log = read_prediction_log(store["PREDICTION_LOG_PATH"])
    mine = log[log["source"] == "recording"].iloc[-1]
    assert (mine["model_name"], str(mine["model_version"]), int(mine["n_rows"])) == (MODEL_NAME, "1", 38)


@pytest.mark.slow
def test_a_short_recording_lists_every_window(cli, tmp_path: Path) -> None:
    t, signals = recording("POSITIVE", 4.0, seed=5)
    path = write_muse_lsl(tmp_path / "short.csv", t, signals)
    code, printed, err = cli(path)
    assert code == 0, err
    lines = printed.splitlines()
    assert lines[2].split() == ["start", "label", "probability"]
    rows = [line.split() for line in lines[3:-1]]
    assert [row[0] for row in rows] == ["0.0", "0.5", "1.0", "1.5", "2.0", "2.5"]
    assert all(row[1] == "s" and row[2] in STATES and 0 < float(row[3]) <= 1 for row in rows)
    assert lines[-1].startswith("overall: ")


def test_a_model_of_other_columns_is_one_line(tmp_path: Path) -> None:
    t, signals = recording("POSITIVE", 3.0, seed=5)
    export = read_muse_export(write_muse_lsl(tmp_path / "rec.csv", t, signals))

    class Metadata:
        def get_input_schema(self):
            from mlflow.types import ColSpec, Schema

            return Schema([ColSpec("double", "pixel_0"), ColSpec("double", "pixel_1")])

    class DigitsModel:
        metadata = Metadata()

    with pytest.raises(
        DataValidationError, match=r"^digits-svm v2 expects columns a Muse recording does not give"
    ):
        predict_recording(export, DigitsModel(), model_label="digits-svm v2")


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("a,b\n1,2\n", "not a recognised Muse export"),
        (None, "recording lasts 0.50 s, too short for one row"),
    ],
)
def test_a_bad_recording_is_one_line_and_exit_2(
    cli, tmp_path: Path, content: str | None, expected: str
) -> None:
    path = tmp_path / "bad.csv"
    if content is None:
        t, signals = recording("POSITIVE", 0.5, seed=5)
        write_muse_lsl(path, t, signals)
    else:
        path.write_text(content)
    code, printed, err = cli(path, "--out", tmp_path / "windows.csv")
    assert code == 2 and printed == ""
    assert err.startswith(f"error: {path}: ") and expected in err and err.count("\n") == 1
    assert not (tmp_path / "windows.csv").exists()


@pytest.mark.slow
def test_no_champion_says_to_run_the_pipeline_first(cli, tmp_path: Path) -> None:
    t, signals = recording("POSITIVE", 3.0, seed=5)
    path = write_muse_lsl(tmp_path / "rec.csv", t, signals)
    code, printed, err = cli(path, "--data-path", "data/mine.csv")
    assert code == 2 and printed == ""
    assert err.startswith(
        "error: no champion for mine-svm: no model of that name is registered in sqlite:///"
    )
    assert err.endswith("run `make run` first\n") and err.count("\n") == 1
