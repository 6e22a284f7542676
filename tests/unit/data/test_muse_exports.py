"""modules.data.muse_exports: real Muse exports (muse-lsl / BlueMuse, Mind Monitor) written synthetically,
with the timestamp jitter, gaps, missing samples and extra columns that real files have."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from modules.data import eeg_features as ef
from modules.data import muse_exports as mx
from modules.errors import DataValidationError
from modules.data.sample import _make_subjects, simulate_recording

START = 1_546_300_800.0
BANDS = [f"{band}_{site}" for band in ("Delta", "Theta", "Alpha", "Beta", "Gamma") for site in ef.SIGNALS[:4]]


def simulated(seconds: float, seed: int = 0, state: str = "POSITIVE") -> tuple[np.ndarray, np.ndarray]:
    """A clean simulated recording at 256 Hz, its signals rounded as an export writes them."""
    rng = np.random.default_rng(seed)
    subject = _make_subjects(rng, 1)[0]
    t, signals = simulate_recording(rng, subject, state, seconds, START)
    return t, np.round(signals, 3)


def write_muse_lsl(path: Path, t: np.ndarray, signals: np.ndarray, **extra: object) -> Path:
    """A `muselsl record` CSV: timestamps, the five signals, then any extra columns."""
    table = pd.DataFrame(signals, columns=list(ef.SIGNALS))
    table.insert(0, "timestamps", t)
    for name, values in extra.items():
        table[name] = values
    table.to_csv(path, index=False, float_format="%.6f")
    return path


def lsl_jitter(n: int, seed: int = 0) -> np.ndarray:
    """Delays of chunk timestamps as LSL tools write them: the host clock runs up to 5-19 ms ahead
    and is pulled back every 200-400 samples, a backward step of 1-15 ms each time."""
    rng = np.random.default_rng(seed)
    delay = np.zeros(n)
    i = 0
    while i < n:
        length = int(rng.integers(200, 400))
        ahead = rng.uniform(0.0049, 0.0189)  # minus one 3.9 ms sample period: a 1-15 ms step back
        delay[i : i + length] = np.linspace(0.0, ahead, length)[: n - i]
        i += length
    return delay


def backward_steps_ms(t: np.ndarray) -> np.ndarray:
    steps = np.diff(t)
    return -1000 * steps[steps < 0]


def features(path: Path, **options: object) -> np.ndarray:
    return ef.export_to_rows(mx.read_muse_export(path, **options), "POSITIVE")[ef.feature_names()].to_numpy()


def write_mind_monitor(
    path: Path,
    t: np.ndarray,
    signals: np.ndarray,
    *,
    seed: int = 0,
    dropped_packets: tuple[int, ...] = (),
    event_every: int = 700,
    extra: dict[str, str] | None = None,
    aux: bool = True,
) -> Path:
    """A Mind Monitor CSV: packets of 12 samples stamped with their arrival time (ms resolution, all
    12 alike), band powers on every row, an `Elements` event row every `event_every` samples."""
    rng = np.random.default_rng(seed)
    n = len(t)
    arrival = np.empty(n)
    for p in range(0, n, 12):
        arrival[p : p + 12] = t[min(p + 11, n - 1)] + rng.uniform(0.005, 0.04)
    stamps = pd.to_datetime(arrival, unit="s").strftime("%Y-%m-%d %H:%M:%S.%f").str[:-3]
    raw = ["RAW_TP9", "RAW_AF7", "RAW_AF8", "RAW_TP10", *(["AUX_RIGHT"] if aux else [])]
    tail = ["Accelerometer_X", "HeadBandOn", "HSI_TP9", "Battery", *(extra or {}), "Elements"]
    header = ["TimeStamp", *BANDS, *raw, *tail]
    dropped = {p * 12 + k for p in dropped_packets for k in range(12)}
    lines = [",".join(header)]
    for i in range(n):
        if i % event_every == 0:
            lines.append(stamps[i] + "," * (len(header) - 2) + ",/muse/elements/blink")
        if i in dropped:
            continue
        values = [f"{v:.3f}" for v in rng.normal(size=len(BANDS))]
        values += [f"{v:.3f}" for v in signals[i, : len(raw)]]
        values += ["0.01", "1", "1", "80", *(extra or {}).values(), ""]
        lines.append(",".join([stamps[i], *values]))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def recording() -> tuple[np.ndarray, np.ndarray]:
    return simulated(20.0, seed=3)


@pytest.fixture(scope="module")
def clean_features(tmp_path_factory: pytest.TempPathFactory, recording) -> np.ndarray:
    t, signals = recording
    return features(write_muse_lsl(tmp_path_factory.mktemp("clean") / "clean.csv", t, signals))


# --------------------------------------------------------------------------- muse-lsl / BlueMuse


def test_clean_export_gives_the_published_rows_of_its_values(tmp_path: Path, recording) -> None:
    t, signals = recording
    export = mx.read_muse_export(write_muse_lsl(tmp_path / "clean.csv", t, signals))
    assert export.format == mx.MUSE_LSL and len(export.segments) == 1 and not export.gaps
    assert export.warnings == () and export.effective_rate == pytest.approx(256.0, abs=1e-6)
    rows = ef.export_to_rows(export, "POSITIVE")
    expected = ef.recording_to_rows(t - t[0], signals, "POSITIVE")
    np.testing.assert_allclose(rows[ef.feature_names()].to_numpy(), expected[ef.feature_names()].to_numpy())
    assert len(rows) == 38


def test_backward_timestamp_steps_are_repaired_to_the_clean_features(
    tmp_path: Path, recording, clean_features: np.ndarray
) -> None:
    t, signals = recording
    jittered = t + lsl_jitter(len(t))
    steps = backward_steps_ms(jittered)
    assert len(steps) >= 10 and steps.min() >= 1.0 and steps.max() <= 15.0  # the real files
    export = mx.read_muse_export(write_muse_lsl(tmp_path / "jittered.csv", jittered, signals))
    assert len(export.segments) == 1 and not export.gaps and export.backward_steps == len(steps)
    assert export.effective_rate == pytest.approx(256.0, rel=1e-3)
    assert "backward steps" in export.summary()
    repaired = ef.export_to_rows(export, "POSITIVE")[ef.feature_names()].to_numpy()
    np.testing.assert_allclose(repaired, clean_features, rtol=1e-12, atol=0)


def test_dejitter_fits_one_line_of_time_on_sample_index(recording) -> None:
    t, _ = recording
    timeline = mx.repair_timeline(t + lsl_jitter(len(t)), 256.0)
    slope, intercept = np.polyfit(np.arange(len(t)), t + lsl_jitter(len(t)) - t[0], 1)
    np.testing.assert_allclose(timeline.timestamps - t[0], intercept + slope * np.arange(len(t)), atol=1e-6)
    assert np.all(np.diff(timeline.timestamps) > 0)


def test_a_two_second_gap_splits_the_recording_and_is_reported(tmp_path: Path) -> None:
    t, signals = simulated(12.0, seed=4)
    keep = np.ones(len(t), dtype=bool)
    keep[1500 : 1500 + 512] = False  # 2 s of samples lost after sample 1500
    path = write_muse_lsl(tmp_path / "gap.csv", (t + lsl_jitter(len(t)))[keep], signals[keep])
    export = mx.read_muse_export(path)
    assert [(s.first_row, s.last_row) for s in export.segments] == [(1, 1500), (1501, keep.sum())]
    assert len(export.gaps) == 1 and export.gaps[0].row == 1501
    assert export.gaps[0].seconds == pytest.approx(2.0, abs=0.02)
    (warning,) = export.warnings
    assert "1 gap" in warning and "2 segments" in warning and "before data row 1501" in warning
    # No window spans the gap: the rows are those of the two parts computed on their own.
    rows = ef.export_to_rows(export, "NEGATIVE")[ef.feature_names()].to_numpy()
    parts = [
        ef.recording_to_rows(np.arange(len(part)) / 256, part, "NEGATIVE")[ef.feature_names()].to_numpy()
        for part in (signals[keep][:1500], signals[keep][1500:])
    ]
    np.testing.assert_allclose(rows, np.vstack(parts))


def test_one_dropped_bluetooth_packet_is_a_gap(tmp_path: Path) -> None:
    t, signals = simulated(12.0, seed=5)
    keep = np.ones(len(t), dtype=bool)
    keep[1200:1212] = False
    path = write_muse_lsl(tmp_path / "packet.csv", (t + lsl_jitter(len(t), seed=2))[keep], signals[keep])
    export = mx.read_muse_export(path)
    assert len(export.gaps) == 1 and export.gaps[0].row == 1201
    assert export.gaps[0].seconds == pytest.approx(12 / 256, abs=0.01)


def test_a_clock_that_steps_back_splits_the_recording(tmp_path: Path) -> None:
    t, signals = simulated(10.0, seed=6)
    joined = np.concatenate([t[:1280], t[1280:] - 3.0])  # two files joined: time goes back 3 s
    export = mx.read_muse_export(write_muse_lsl(tmp_path / "joined.csv", joined, signals))
    assert len(export.segments) == 2 and export.gaps[0].seconds == pytest.approx(-3.0, abs=0.01)
    assert "time steps back 3.00" in export.warnings[0]


def test_marker_and_other_extra_columns_are_named_in_one_warning(tmp_path: Path, clean_features) -> None:
    t, signals = simulated(20.0, seed=3)
    markers = np.zeros(len(t))
    markers[100] = 1.0
    path = write_muse_lsl(tmp_path / "markers.csv", t, signals, Marker0=markers, Left_AUX=0.0)
    export = mx.read_muse_export(path)
    (warning,) = export.warnings
    assert "ignoring 2 columns" in warning and "'Marker0'" in warning and "'Left_AUX'" in warning
    np.testing.assert_array_equal(
        ef.export_to_rows(export, "P")[ef.feature_names()].to_numpy(), clean_features
    )


def test_short_runs_of_missing_samples_are_interpolated_and_reported(tmp_path: Path) -> None:
    t, signals = simulated(6.0, seed=7)
    holed = signals.copy()
    holed[300:305, 1] = np.nan  # AF7, 5 samples (data rows 301-305)
    holed[900, 3] = np.nan
    export = mx.read_muse_export(write_muse_lsl(tmp_path / "holes.csv", t, holed))
    assert export.filled_values == 6
    (warning,) = export.warnings
    assert "interpolated 6 missing values" in warning and "'AF7' 5 (longest run 5)" in warning
    np.testing.assert_allclose(
        export.signals[300:305, 1], np.linspace(signals[299, 1], signals[305, 1], 7)[1:-1]
    )
    assert np.isfinite(ef.export_to_rows(export, "P")[ef.feature_names()].to_numpy()).all()


def test_long_runs_of_missing_samples_are_refused_with_their_rows(tmp_path: Path) -> None:
    t, signals = simulated(6.0, seed=7)
    holed = signals.copy()
    holed[1000:1040, 0] = np.nan
    with pytest.raises(DataValidationError) as error:
        mx.read_muse_export(write_muse_lsl(tmp_path / "dropout.csv", t, holed))
    message = str(error.value)
    assert "dropout.csv" in message and "'TP9'" in message and "data rows 1001-1040 (40 samples)" in message
    assert "np.float64" not in message and "\n" not in message


def test_values_are_plain_numbers_in_messages(tmp_path: Path) -> None:
    t, signals = simulated(3.0)
    table = pd.DataFrame(signals, columns=list(ef.SIGNALS)).astype(object)
    table.insert(0, "timestamps", t)
    table.loc[4, "TP10"] = "inf"
    path = tmp_path / "inf.csv"
    table.to_csv(path, index=False)
    with pytest.raises(
        DataValidationError, match=r"'TP10' has 1 infinite value \(first at data row 5: inf\)"
    ):
        mx.read_muse_export(path)


def test_a_missing_timestamp_is_refused_with_its_row(tmp_path: Path) -> None:
    t, signals = simulated(3.0)
    t = t.copy()
    t[9] = np.nan
    with pytest.raises(
        DataValidationError, match=r"'timestamps' is empty in 1 row with samples \(data rows 10\)"
    ):
        mx.read_muse_export(write_muse_lsl(tmp_path / "no_time.csv", t, signals))


def test_a_rate_far_from_256_hz_is_refused_unless_given(tmp_path: Path) -> None:
    t, signals = simulated(10.0)
    slow = START + np.arange(len(t)) / 220.0  # a 2014 Muse
    path = write_muse_lsl(tmp_path / "muse2014.csv", slow, signals)
    with pytest.raises(DataValidationError) as error:
        mx.read_muse_export(path)
    assert "effective sampling rate 220.00 Hz" in str(error.value) and "--sampling-rate 220" in str(
        error.value
    )
    export = mx.read_muse_export(path, sampling_rate=220)
    assert export.effective_rate == pytest.approx(220.0) and export.duration_s == pytest.approx(len(t) / 220)


def test_a_gzip_compressed_export_is_read(tmp_path: Path, recording, clean_features) -> None:
    t, signals = recording
    plain = write_muse_lsl(tmp_path / "plain.csv", t, signals)
    packed = tmp_path / "packed.csv.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    np.testing.assert_array_equal(features(packed), clean_features)


def test_a_header_only_or_empty_file_is_an_export_without_samples(tmp_path: Path) -> None:
    header_only = tmp_path / "header.csv"
    header_only.write_text("timestamps,TP9,AF7,AF8,TP10,Right AUX\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    assert mx.read_muse_export(header_only).n_samples == 0
    assert mx.read_muse_export(empty).format == mx.EMPTY


# --------------------------------------------------------------------------- Mind Monitor


def test_mind_monitor_export_gives_the_clean_features(tmp_path: Path, recording, clean_features) -> None:
    t, signals = recording
    export = mx.read_muse_export(write_mind_monitor(tmp_path / "museMonitor.csv", t, signals))
    assert export.format == mx.MIND_MONITOR
    # Band powers, HSI, battery and Elements are ignored by design; event-only rows are skipped.
    assert export.warnings == () and export.skipped_rows == len(range(0, len(t), 700))
    assert export.max_jitter_s > 0.01 and len(export.segments) == 1
    repaired = ef.export_to_rows(export, "POSITIVE")[ef.feature_names()].to_numpy()
    np.testing.assert_allclose(repaired, clean_features, rtol=1e-12, atol=0)


def test_mind_monitor_dropped_packet_is_a_gap(tmp_path: Path, recording) -> None:
    t, signals = recording
    export = mx.read_muse_export(
        write_mind_monitor(tmp_path / "drop.csv", t, signals, dropped_packets=(200,), seed=1)
    )
    assert len(export.gaps) == 1 and export.gaps[0].seconds == pytest.approx(12 / 256, abs=0.02)
    # Packets arrive in bursts of 12 alike timestamps: the gap is placed to within a packet.
    assert abs(export.segments[0].n_samples - 2400) <= 12


def test_mind_monitor_unknown_columns_are_warned_and_aux_is_required(tmp_path: Path, recording) -> None:
    t, signals = recording
    path = write_mind_monitor(tmp_path / "extra.csv", t[:1000], signals[:1000], extra={"Notes": "x"})
    (warning,) = mx.read_muse_export(path).warnings
    assert "ignoring 1 column" in warning and "'Notes'" in warning
    no_aux = write_mind_monitor(tmp_path / "no_aux.csv", t[:1000], signals[:1000], aux=False)
    with pytest.raises(DataValidationError, match=r"missing column 'AUX_RIGHT'.*--zero-aux"):
        mx.read_muse_export(no_aux)
    assert (mx.read_muse_export(no_aux, zero_aux=True).signals[:, 4] == 0).all()


def test_mind_monitor_without_raw_eeg_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bands.csv"
    path.write_text(
        "TimeStamp," + ",".join(BANDS) + ",Elements\n2025-07-01 14:56:05.592" + ",0.5" * 20 + ",\n"
    )
    with pytest.raises(DataValidationError, match="without raw EEG columns"):
        mx.read_muse_export(path)


# --------------------------------------------------------------------------- unknown input


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("time,ch1,ch2\n0.0,1,2\n", "columns found: 'time', 'ch1', 'ch2'"),
        ("timestamps;TP9;AF7\n0.0;1;2\n", "holding semicolons"),
    ],
)
def test_an_unknown_format_is_one_line_naming_both_formats(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "other.csv"
    path.write_text(text)
    with pytest.raises(DataValidationError) as error:
        mx.read_muse_export(path)
    message = str(error.value)
    assert "not a recognised Muse export" in message and "muse-lsl" in message and "Mind Monitor" in message
    assert expected in message and "\n" not in message


def test_duplicate_columns_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "dup.csv"
    path.write_text("timestamps,TP9,TP9,AF7,AF8,TP10,Right AUX\n0,1,1,1,1,1,1\n")
    with pytest.raises(DataValidationError, match="duplicate column name 'TP9'"):
        mx.read_muse_export(path)
