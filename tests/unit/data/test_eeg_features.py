"""The published feature extraction against hand-computed values, the header and the CLI."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.commands import exit_code
from modules.data import eeg_features as ef
from modules.errors import run_cli

PROJECT_ROOT = Path(__file__).resolve().parents[3]
T = np.arange(150, dtype=float)
# Offsets of each group inside one window's 1274 values (published order).
OFFSETS = {
    "mean": 0,
    "mean_d": 5,
    "mean_q": 10,
    "std": 60,
    "std_d": 65,
    "moments": 70,
    "max": 90,
    "max_d": 95,
    "max_q": 100,
    "min": 150,
    "min_d": 155,
    "min_q": 160,
    "covmat": 210,
    "eigen": 354,
    "logm": 366,
    "entropy": 444,
    "correlate": 449,
    "fft": 524,
}


def group(vector: np.ndarray, name: str, size: int) -> np.ndarray:
    return vector[OFFSETS[name] : OFFSETS[name] + size]


@pytest.fixture(scope="module")
def window() -> np.ndarray:
    """Five simple signals: constant 2, ramp 0..149, falling ramp, alternating +-1, zeros."""
    return np.stack([np.full(150, 2.0), T, -T, (-1.0) ** T, np.zeros(150)], axis=1)


@pytest.fixture(scope="module")
def vector(window: np.ndarray) -> np.ndarray:
    return ef.window_features(window)


# --- header -------------------------------------------------------------------------------


def test_published_header_has_the_documented_names_and_positions() -> None:
    header = ef.published_header()
    assert len(header) == 2549
    assert len(set(header)) == 2549
    assert header[0] == "# mean_0_a"
    assert header[524] == "fft_0_a"
    assert header[1274] == "mean_0_b"
    assert header[2548] == "label"
    assert header[1273] == "fft_749_a"
    assert header[2547] == "fft_749_b"


def test_feature_names_follow_the_group_order_and_the_quarter_mean_quirk() -> None:
    names = ef.feature_names()
    assert len(names) == 2548 and not any(n.startswith("#") for n in names)
    assert names[5:10] == [f"mean_d_{k}_a" for k in range(5)]
    assert names[10:15] == [f"mean_d_{k}_a2" for k in range(5)]
    assert names[15] == "mean_d_5_a" and names[59] == "mean_d_49_a"
    assert names[1274 + 10] == "mean_d_0_b2"
    expected_first = {
        "stddev_0_a": 60,
        "stddev_d_0_a": 65,
        "moments_0_a": 70,
        "max_0_a": 90,
        "max_d_0_a": 95,
        "max_q_0_a": 100,
        "min_0_a": 150,
        "min_d_0_a": 155,
        "min_q_0_a": 160,
        "covmat_0_a": 210,
        "eigen_0_a": 354,
        "logm_0_a": 366,
        "entropy0_a": 444,
        "correlate_0_a": 449,
        "fft_0_a": 524,
    }
    assert {name: names.index(name) for name in expected_first} == expected_first
    assert names[1274:] == [n[:-2] + "_b" if n.endswith("_a") else n[:-3] + "_b2" for n in names[:1274]]


# --- one window, hand-computed ------------------------------------------------------------


def test_means_and_half_differences(vector: np.ndarray) -> None:
    np.testing.assert_allclose(group(vector, "mean", 5), [2, 74.5, -74.5, 0, 0], atol=1e-12)
    # Halves are rows 0..74 and 75..149: the ramp rises by 75; the alternating signal has one
    # more +1 in the first half and one more -1 in the second.
    np.testing.assert_allclose(group(vector, "mean_d", 5), [0, 75, -75, -2 / 75, 0], atol=1e-12)


def test_quarter_means_blocks_and_differences(vector: np.ndarray) -> None:
    q = group(vector, "mean_q", 50).reshape(10, 5)  # k = 5 * block + signal
    # Ramp quarters are rows 0-36, 37-74, 75-111, 112-149.
    q1, q2, q3, q4 = 18.0, 55.5, 93.0, 130.5
    expected = [q1, q2, q3, q4, q1 - q2, q1 - q3, q1 - q4, q2 - q3, q2 - q4, q3 - q4]
    np.testing.assert_allclose(q[:, 1], expected)
    np.testing.assert_allclose(q[:, 2], [-v for v in expected])
    np.testing.assert_allclose(q[:4, 0], 2.0)
    np.testing.assert_allclose(q[4:, 0], 0.0, atol=1e-12)


def test_population_standard_deviation(vector: np.ndarray) -> None:
    ramp_std = np.sqrt((150**2 - 1) / 12)  # discrete uniform 0..149
    np.testing.assert_allclose(group(vector, "std", 5), [0, ramp_std, ramp_std, 1, 0], atol=1e-12)
    # Both halves of a ramp have the same spread; so do both halves of the alternating signal.
    np.testing.assert_allclose(group(vector, "std_d", 5), 0.0, atol=1e-9)


def test_central_moments_orders_3_to_6(vector: np.ndarray) -> None:
    m = group(vector, "moments", 20).reshape(4, 5)  # k = 5 * (order - 3) + signal
    n = 150
    m4 = (n**2 - 1) * (3 * n**2 - 7) / 240  # discrete uniform, not standardised
    m6 = (n**2 - 1) * (3 * n**4 - 18 * n**2 + 31) / 1344
    np.testing.assert_allclose(m[:, 1], [0, m4, 0, m6], atol=1e-3)
    np.testing.assert_allclose(m[:, 2], [0, m4, 0, m6], atol=1e-3)
    np.testing.assert_allclose(m[:, 3], [0, 1, 0, 1], atol=1e-12)  # alternating +-1, mean 0
    np.testing.assert_allclose(m[:, 0], 0.0)


def test_max_and_min_with_halves_and_quarters(vector: np.ndarray) -> None:
    np.testing.assert_allclose(group(vector, "max", 5), [2, 149, 0, 1, 0])
    np.testing.assert_allclose(group(vector, "min", 5), [2, 0, -149, -1, 0])
    np.testing.assert_allclose(group(vector, "max_d", 5), [0, 149 - 74, -75 - 0, 0, 0])
    np.testing.assert_allclose(group(vector, "min_d", 5), [0, 75 - 0, -149 + 74, 0, 0])
    max_q = group(vector, "max_q", 50).reshape(10, 5)
    np.testing.assert_allclose(max_q[:4, 1], [36, 74, 111, 149])
    np.testing.assert_allclose(max_q[4:, 1], [36 - 74, 36 - 111, 36 - 149, 74 - 111, 74 - 149, 111 - 149])
    min_q = group(vector, "min_q", 50).reshape(10, 5)
    np.testing.assert_allclose(min_q[:4, 1], [0, 37, 75, 112])
    np.testing.assert_allclose(min_q[:4, 2], [-36, -74, -111, -149])


def test_correlate_is_the_rowwise_dot_product_of_the_two_halves(vector: np.ndarray) -> None:
    i = np.arange(75, dtype=float)
    # 2*2 + i*(i+75) + (-i)*(-(i+75)) + (-1)^i * (-1)^(i+75) + 0 = 3 + 2 i (i + 75)
    np.testing.assert_allclose(group(vector, "correlate", 75), 3 + 2 * i * (i + 75))


def test_fft_is_the_real_dft_across_the_five_signals(vector: np.ndarray, window: np.ndarray) -> None:
    fft = group(vector, "fft", 750).reshape(150, 5)  # k = 5 * t + j
    alternating = (-1.0) ** T
    np.testing.assert_allclose(fft[:, 0], 2 + alternating, atol=1e-12)  # X_0 = sum of the signals
    c1, c2, c3 = (np.cos(2 * np.pi * j / 5) for j in (1, 2, 3))
    np.testing.assert_allclose(fft[:, 1], 2 + c1 * T - c2 * T + c3 * alternating, atol=1e-9)
    np.testing.assert_allclose(fft, np.fft.fft(window, axis=1).real, atol=1e-9)
    # The published duplicate columns are exact, not just close.
    assert np.array_equal(fft[:, 1], fft[:, 4]) and np.array_equal(fft[:, 2], fft[:, 3])


def test_fft_of_a_value_shared_by_all_signals_is_only_in_bin_zero() -> None:
    fft = group(ef.window_features(np.full((150, 5), 3.0)), "fft", 750).reshape(150, 5)
    np.testing.assert_allclose(fft[:, 0], 15.0)
    np.testing.assert_allclose(fft[:, 1:], 0.0, atol=1e-12)


def test_entropy_uses_magnitudes_as_a_distribution() -> None:
    w = np.zeros((150, 5))
    w[:2, 0] = [3.0, -3.0]  # two equal magnitudes -> ln 2
    w[:2, 1] = [1.0, -3.0]  # p = 1/4, 3/4
    w[:, 2] = -7.0  # any constant -> uniform -> ln 150
    w[:, 3] = (-1.0) ** T  # magnitudes all 1 -> ln 150
    # column 4 stays all zero: defined as ln 150, the limit of a constant signal
    entropy = group(ef.window_features(w), "entropy", 5)
    expected = [np.log(2), -(0.25 * np.log(0.25) + 0.75 * np.log(0.75)), *[np.log(150)] * 3]
    np.testing.assert_allclose(entropy, expected)


def test_covmat_is_the_covariance_of_the_published_12x12_matrix(vector: np.ndarray) -> None:
    values = np.concatenate(
        [group(vector, "mean_q", 50)[:44], group(vector, "max_q", 50), group(vector, "min_q", 50)]
    )
    expected = np.cov(values.reshape(12, 12))  # rows are the variables
    cov = group(vector, "covmat", 144).reshape(12, 12)
    np.testing.assert_allclose(cov, expected, rtol=1e-12, atol=1e-9)
    assert np.array_equal(cov, cov.T)  # published duplicates covmat_{12i+j} == covmat_{12j+i}
    eigen = group(vector, "eigen", 12)
    np.testing.assert_allclose(np.sort(eigen), np.linalg.eigvalsh(expected), atol=1e-6 * np.trace(expected))


def test_covariance_eigenvalues_and_logm_on_a_rank_one_matrix() -> None:
    # Row r is r * [0..11]: cov[a, b] = a * b * var(0..11, ddof=1) = 13 a b, a rank-one matrix.
    a = np.arange(12.0)
    matrices = (a[:, None] * a[None, :])[None]
    cov = ef._covariance(matrices)[0]
    np.testing.assert_allclose(cov, 13 * np.outer(a, a), rtol=1e-12)
    # One eigenvalue 13 * sum(a^2) = 6578, the other eleven exactly 0 after noise removal.
    eigen = ef._eigenvalues(cov[None])[0]
    np.testing.assert_allclose(np.sort(eigen)[-1], 6578.0, rtol=1e-12)
    assert np.count_nonzero(eigen) == 1
    # logm: ln(6578) along u = a/|a|, ln(floor) on the null space, floor = 1e-6 * trace / 12.
    u = a / np.linalg.norm(a)
    floor = 1e-6 * 6578.0 / 12
    logm = np.log(6578.0) * np.outer(u, u) + np.log(floor) * (np.eye(12) - np.outer(u, u))
    upper_by_diagonal = np.concatenate([np.diagonal(logm, offset=d) for d in range(12)])
    np.testing.assert_allclose(ef._log_covariance(cov[None])[0], upper_by_diagonal, atol=1e-9)


def test_flat_windows_give_finite_features() -> None:
    assert np.isfinite(ef.window_features(np.full((150, 5), 4.0))).all()
    vector = ef.window_features(np.zeros((150, 5)))
    assert np.isfinite(vector).all()
    # Covariance 0: every eigenvalue sits at the absolute floor 1e-12, so logm = ln(1e-12) I.
    np.testing.assert_allclose(group(vector, "logm", 12), np.log(1e-12))
    np.testing.assert_allclose(group(vector, "logm", 78)[12:], 0.0, atol=1e-12)
    np.testing.assert_allclose(group(vector, "entropy", 5), np.log(150))


def test_window_features_equals_the_batched_version() -> None:
    windows = np.random.default_rng(0).normal(0, 20, size=(4, 150, 5))
    batch = ef.windows_to_features(windows)
    assert batch.shape == (4, 1274)
    np.testing.assert_array_equal(ef.window_features(windows[2]), batch[2])


def test_window_features_rejects_a_wrong_shape() -> None:
    with pytest.raises(ValueError, match=r"\(150, 5\)"):
        ef.window_features(np.zeros((150, 4)))


# --- windowing and rows -------------------------------------------------------------------


def muse_timestamps(seconds: float, start: float = 1_546_300_800.0) -> np.ndarray:
    return start + np.arange(round(seconds * ef.SAMPLING_RATE)) / ef.SAMPLING_RATE


@pytest.mark.parametrize(
    ("seconds", "windows"),
    [(0.5, 0), (1.0, 1), (1.4, 1), (1.5, 2), (2.0, 3), (10.0, 19), (60.0, 119)],
)
def test_number_of_windows_for_a_duration(seconds: float, windows: int) -> None:
    # A window is kept while it holds at least 0.9 s: at 256 Hz a recording of d seconds
    # (last sample at d - 1/256) gives windows starting at 0, 0.5, ..., d - 1.0.
    assert len(ef.window_bounds(muse_timestamps(seconds))) == windows


def test_windows_are_one_second_half_a_second_apart() -> None:
    bounds = ef.window_bounds(muse_timestamps(3.0))
    np.testing.assert_array_equal(bounds[:3], [[0, 256], [128, 384], [256, 512]])
    # The last window runs to the end of the recording and is a sample short (0.996 s).
    np.testing.assert_array_equal(bounds[-1], [512, 767])


def test_windowing_stops_at_a_gap_in_the_recording() -> None:
    t = np.concatenate([muse_timestamps(3.0, 0.0), muse_timestamps(3.0, 10.0)])
    # Windows from 0 to 2.0 s are whole; the one at 2.5 s spans the gap with 0.496 s of data.
    assert len(ef.window_bounds(t)) == 5


def test_resampling_keeps_a_constant_and_gives_150_rows() -> None:
    signals = np.tile([1.0, -2.0, 3.0, 0.5, 0.0], (3 * 256, 1))
    windows = ef.resample_windows(muse_timestamps(3.0), signals)
    assert windows.shape == (5, 150, 5)
    np.testing.assert_allclose(
        windows, np.broadcast_to([1.0, -2.0, 3.0, 0.5, 0.0], windows.shape), atol=1e-12
    )


def test_recording_to_rows_chains_previous_and_current_windows() -> None:
    rng = np.random.default_rng(1)
    t = muse_timestamps(5.0)
    rows = ef.recording_to_rows(t, rng.normal(0, 10, (len(t), 5)), "POSITIVE")
    assert list(rows.columns) == [*ef.feature_names(), "label"]
    assert len(rows) == 8  # 9 windows, the first makes no row
    values = rows[ef.feature_names()].to_numpy()
    np.testing.assert_array_equal(values[:-1, 1274:], values[1:, :1274])
    assert (rows["label"] == "POSITIVE").all()


def test_recording_too_short_for_a_row_gives_an_empty_frame() -> None:
    t = muse_timestamps(1.4)
    rows = ef.recording_to_rows(t, np.zeros((len(t), 5)), "NEUTRAL")
    assert rows.empty and len(rows.columns) == 2549


# --- CSV output and command line ----------------------------------------------------------


def write_muse_csv(path: Path, seconds: float, columns: tuple[str, ...] = ef.SIGNALS) -> Path:
    rng = np.random.default_rng(7)
    t = muse_timestamps(seconds)
    table = pd.DataFrame(rng.normal(0, 20, (len(t), len(columns))), columns=list(columns))
    table.insert(0, "timestamps", t)
    table.to_csv(path, index=False, float_format="%.6f")
    return path


def run_main(argv: list[str]) -> int:
    """Run the CLI in-process the way `python -m` does; returns the exit code."""
    return exit_code(ef.cli, argv)


def test_cli_writes_rows_with_the_published_header(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    recording = write_muse_csv(tmp_path / "recording.csv", 3.0)
    out = tmp_path / "rows.csv"
    assert run_main([str(recording), "--label", "POSITIVE", "--out", str(out)]) == 0
    assert "wrote 4 rows" in capsys.readouterr().out
    first_line = out.read_text().splitlines()[0]
    assert first_line.split(",") == ef.published_header()
    rows = pd.read_csv(out)
    assert rows.shape == (4, 2549)
    assert (rows["label"] == "POSITIVE").all()
    values = rows.drop(columns="label").to_numpy()
    np.testing.assert_array_equal(values[:-1, 1274:], values[1:, :1274])  # equal after re-reading


def test_cli_refuses_a_four_signal_export_naming_the_column(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    recording = write_muse_csv(tmp_path / "four.csv", 3.0, ef.SIGNALS[:4])
    assert run_main([str(recording), "--label", "NEUTRAL", "--out", str(tmp_path / "rows.csv")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "Right AUX" in err and "four.csv" in err and "--zero-aux" in err
    assert not (tmp_path / "rows.csv").exists()


def test_cli_zero_aux_fills_the_missing_column(tmp_path: Path) -> None:
    recording = write_muse_csv(tmp_path / "four.csv", 3.0, ef.SIGNALS[:4])
    out = tmp_path / "rows.csv"
    assert run_main([str(recording), "--label", "NEUTRAL", "--out", str(out), "--zero-aux"]) == 0
    rows = pd.read_csv(out)
    assert (rows[["mean_4_b", "stddev_4_b", "max_4_a"]] == 0).all().all()


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("missing", "file not found"),
        ("no_timestamps", "no 'timestamps' column"),
        ("too_short", "too short for one row"),
        ("text_value", "column 'AF7'"),
    ],
)
def test_cli_bad_inputs_give_one_line_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture, case: str, expected: str
) -> None:
    path = tmp_path / f"{case}.csv"
    if case == "no_timestamps":
        write_muse_csv(path, 3.0)
        pd.read_csv(path).drop(columns="timestamps").to_csv(path, index=False)
    elif case == "too_short":
        write_muse_csv(path, 1.4)
    elif case == "text_value":
        write_muse_csv(path, 3.0)
        table = pd.read_csv(path).astype({"AF7": object})
        table.loc[5, "AF7"] = "n/a"
        table.to_csv(path, index=False)
    assert run_main([str(path), "--label", "NEGATIVE", "--out", str(tmp_path / "rows.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: ")
    assert expected in err and path.name in err


@pytest.mark.slow
def test_cli_runs_as_a_module(tmp_path: Path) -> None:
    recording = write_muse_csv(tmp_path / "four.csv", 3.0, ef.SIGNALS[:4])
    command = [sys.executable, "-m", "modules", "extract", str(recording), "--label", "POSITIVE"]
    result = subprocess.run(
        [*command, "--out", str(tmp_path / "rows.csv")],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "'Right AUX'" in result.stderr


# --- real exports through the command line (issue 14) -------------------------------------


@pytest.mark.parametrize("seconds", [0.0, 0.5, 0.9, 1.0])
def test_recordings_with_fewer_than_two_windows_give_no_rows_without_crashing(seconds: float) -> None:
    t = muse_timestamps(seconds)
    rows = ef.recording_to_rows(t, np.ones((len(t), 5)), "NEUTRAL")
    assert rows.empty and len(rows.columns) == 2549


def test_minimum_recording_is_360_samples_at_256_hz() -> None:
    n = ef.min_recording_samples(256)
    t = muse_timestamps(n / 256)
    assert n == 360 and len(ef.window_bounds(t)) == 2 and len(ef.window_bounds(t[:-1])) == 1


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(0.5, "recording lasts 0.50 s, too short for one row"), (0.0, "has no samples (0.00 s)")],
)
def test_cli_short_or_empty_recording_is_one_line_with_duration_and_minimum(
    tmp_path: Path, capsys: pytest.CaptureFixture, seconds: float, expected: str
) -> None:
    path = write_muse_csv(tmp_path / "short.csv", seconds)
    assert run_main([str(path), "--label", "NEUTRAL", "--out", str(tmp_path / "rows.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "short.csv" in err
    assert expected in err and "at least 1.41 s" in err
    assert not (tmp_path / "rows.csv").exists()


def test_cli_accepts_jittered_timestamps_and_reports_the_repair(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = write_muse_csv(tmp_path / "jittered.csv", 3.0)
    table = pd.read_csv(path)
    table.loc[1::2, "timestamps"] += 0.002  # uneven spacing
    table.loc[299::300, "timestamps"] -= 0.010  # and a step back every 300 samples
    table.to_csv(path, index=False, float_format="%.6f")
    assert (np.diff(table["timestamps"]) < 0).any()
    assert run_main([str(path), "--label", "POSITIVE", "--out", str(tmp_path / "rows.csv")]) == 0
    out = capsys.readouterr().out
    assert "wrote 4 rows" in out and "backward steps" in out and "effective rate 256.0" in out


def test_cli_names_extra_columns_in_one_warning_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_muse_csv(tmp_path / "marked.csv", 3.0)
    table = pd.read_csv(path)
    table["Marker0"] = 0
    table.to_csv(path, index=False)
    assert run_main([str(path), "--label", "POSITIVE", "--out", str(tmp_path / "rows.csv")]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "'Marker0'" in warnings[0]


def test_cli_unknown_format_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / "openbci.csv"
    path.write_text("Sample Index,EXG Channel 0\n0,1.0\n")
    assert run_main([str(path), "--label", "POSITIVE", "--out", str(tmp_path / "rows.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a recognised Muse export" in err


def test_cli_missing_values_show_plain_row_numbers(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path = write_muse_csv(tmp_path / "dropout.csv", 3.0)
    table = pd.read_csv(path)
    table.loc[100:139, "AF8"] = np.nan
    table.to_csv(path, index=False)
    assert run_main([str(path), "--label", "POSITIVE", "--out", str(tmp_path / "rows.csv")]) == 2
    err = capsys.readouterr().err.strip()
    assert "data rows 101-140 (40 samples)" in err and "np.float64" not in err and "nan" not in err.lower()
