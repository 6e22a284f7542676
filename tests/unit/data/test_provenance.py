"""modules.data.provenance: production trains only on the dataset pinned in the manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.commands import run_command
from modules.data.loading import file_digest
from modules.errors import DataValidationError
from modules.data.provenance import cli, pin_dataset, verify_for_environment
from modules.settings import load_settings

DIGEST = "3f2a" + "0" * 60
OTHER = "9b1c" + "f" * 60


def write_manifest(path: Path, **extra: object) -> Path:
    values = {"kaggle_dataset": "someone/eeg", "file": "emotions.csv", "label_column": "label", **extra}
    path.write_text(json.dumps(values, indent=2) + "\n")
    return path


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    return write_manifest(tmp_path / "manifest.json")


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    path = tmp_path / "emotions.csv"
    rows = [f"{i},{i * 0.5},{'POSITIVE' if i % 2 else 'NEGATIVE'}" for i in range(8)]
    path.write_text("f0,f1,label\n" + "\n".join(rows) + "\n")
    return path


def production(tmp_path: Path):
    return load_settings(root=tmp_path, env={"PIPELINE_ENV": "production"})


def test_local_runs_check_nothing(tmp_path: Path):
    settings = load_settings(root=tmp_path, env={})
    missing = tmp_path / "no-manifest.json"
    for source in ("sample", "kaggle", "user"):
        assert (
            verify_for_environment(
                settings, data_path="data/emotions.csv", digest=DIGEST, source=source, manifest=missing
            )
            == "local: data not checked against the manifest"
        )


def test_production_refuses_the_sample(tmp_path: Path, dataset: Path):
    manifest = write_manifest(tmp_path / "manifest.json", sha256=DIGEST)
    with pytest.raises(DataValidationError) as error:
        verify_for_environment(
            production(tmp_path), data_path=dataset, digest=DIGEST, source="sample", manifest=manifest
        )
    message = str(error.value)
    assert "emotions.csv is the synthetic sample" in message
    assert "python -m modules provenance pin" in message
    assert "\n" not in message
    assert error.value.exit_code == 2


def test_production_refuses_a_manifest_without_digest(tmp_path: Path, dataset: Path, manifest: Path):
    with pytest.raises(DataValidationError) as error:
        verify_for_environment(
            production(tmp_path), data_path=dataset, digest=DIGEST, source="kaggle", manifest=manifest
        )
    message = str(error.value)
    assert str(manifest) in message and "pins no sha256" in message
    assert "emotions.csv" in message and "3f2a00000000..." in message
    assert "\n" not in message


def test_production_refuses_another_digest(tmp_path: Path, dataset: Path):
    manifest = write_manifest(tmp_path / "manifest.json", sha256=OTHER)
    with pytest.raises(DataValidationError) as error:
        verify_for_environment(
            production(tmp_path), data_path=dataset, digest=DIGEST, source="kaggle", manifest=manifest
        )
    message = str(error.value)
    assert f"{dataset} has sha256 3f2a00000000..." in message
    assert f"{manifest} pins 9b1cffffffff..." in message
    assert DIGEST not in message and OTHER not in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("manifest_text", "expected"),
    [
        (None, "no such file"),
        ("{not json", "not readable JSON"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"sha256": "abc"}), "is not a sha256 digest"),
    ],
)
def test_production_refuses_a_broken_manifest(tmp_path: Path, manifest_text: str | None, expected: str):
    manifest = tmp_path / "manifest.json"
    if manifest_text is not None:
        manifest.write_text(manifest_text)
    with pytest.raises(DataValidationError, match=expected):
        verify_for_environment(
            production(tmp_path), data_path="emotions.csv", digest=DIGEST, source="user", manifest=manifest
        )


def test_production_passes_the_pinned_digest(tmp_path: Path):
    # The pinned digest may be written in upper case.
    manifest = write_manifest(tmp_path / "manifest.json", sha256=DIGEST.upper())
    line = verify_for_environment(
        production(tmp_path), data_path="emotions.csv", digest=DIGEST, source="kaggle", manifest=manifest
    )
    assert line == f"production: digest 3f2a00000000... matches {manifest}"


def test_pin_writes_digest_size_and_rows(tmp_path: Path, dataset: Path, manifest: Path):
    values = pin_dataset(dataset, manifest=manifest)
    written = json.loads(manifest.read_text())
    assert written == values
    assert written["sha256"] == file_digest(dataset)
    assert written["size_bytes"] == dataset.stat().st_size
    assert written["rows"] == 8
    # What was there before is kept; nothing but the manifest is left in the folder.
    assert written["kaggle_dataset"] == "someone/eeg"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emotions.csv", "manifest.json"]
    # The pinned file now passes in production.
    assert verify_for_environment(
        production(tmp_path),
        data_path=dataset,
        digest=file_digest(dataset),
        source="kaggle",
        manifest=manifest,
    ).startswith("production: digest")


def test_pin_refuses_the_sample(tmp_path: Path, dataset: Path, manifest: Path):
    dataset.with_suffix(".metadata.json").write_text(json.dumps({"source": "sample"}))
    before = manifest.read_text()
    with pytest.raises(DataValidationError, match=r"emotions\.csv is the synthetic sample"):
        pin_dataset(dataset, manifest=manifest)
    assert manifest.read_text() == before


def test_pin_refuses_a_file_the_manifest_does_not_name(tmp_path: Path, manifest: Path):
    other = tmp_path / "digits.csv"
    other.write_text("f0,label\n1,a\n2,b\n")
    with pytest.raises(DataValidationError, match=r"names the file 'emotions\.csv', not 'digits\.csv'"):
        pin_dataset(other, manifest=manifest)


def test_pin_command_exits_2_with_one_line_on_the_sample(
    dataset: Path, manifest: Path, capsys: pytest.CaptureFixture[str]
):
    from modules.errors import run_cli

    dataset.with_suffix(".metadata.json").write_text(json.dumps({"source": "sample"}))
    with pytest.raises(SystemExit) as exit_info:
        run_cli(lambda: run_command(cli, ["pin", str(dataset), "--manifest", str(manifest)]))
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "synthetic sample" in err


def test_pin_command_prints_what_it_pinned(dataset: Path, manifest: Path, capsys: pytest.CaptureFixture[str]):
    assert run_command(cli, ["pin", str(dataset), "--manifest", str(manifest)]) == 0
    assert f"sha256 {file_digest(dataset)[:12]}..., 8 rows" in capsys.readouterr().out
