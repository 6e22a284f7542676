"""What the tracking client shares with the server operations: a private local store."""

from __future__ import annotations

import stat
from pathlib import Path

from modules.settings import load_settings
from modules.tracking import client as tracking


def test_the_client_creates_its_local_sqlite_store_readable_by_its_owner_only(tmp_path: Path):
    store = tmp_path / "mlruns" / "mlflow.db"
    settings = load_settings(root=tmp_path, env={"MLFLOW_TRACKING_URI": f"sqlite:///{store}"})
    tracking.connect(settings)
    assert stat.S_IMODE(store.stat().st_mode) == 0o600

    store.chmod(0o644)  # a store made by an older version is tightened
    tracking.connect(settings)
    assert stat.S_IMODE(store.stat().st_mode) == 0o600
