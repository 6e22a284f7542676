"""A flow run locally on Metaflow's GCS datastore (the one the GKE profile uses), against the emulator.

The probe flow (start, a foreach of two chunks, a join that fails on request, end) runs with
`--datastore=gs`; its artifacts must land in the emulated bucket, and `resume` must read the
finished steps' artifacts back from there instead of running them again.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from modules.deploy.argo import gcs_stand_in

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
PROBE = REPO / "tests" / "integration" / "argo_probe_flow.py"
BUCKET = "metaflow-probe"
ROOT = f"gs://{BUCKET}/metaflow"
READ_BACK = """
import json
from metaflow import Flow, namespace
namespace(None)
run = Flow("ArgoProbeFlow").latest_run
print(json.dumps({"successful": run.successful, "chunks_done": run["join"].task.data.chunks_done,
                  "fitted": sorted(task.data.chunk for task in run["fit_chunk"])}))
"""


def run_probe(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PROBE), "--no-pylint", "--datastore=gs", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_a_run_lands_in_the_bucket_and_resume_reads_it_back(tmp_path: Path) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    with gcs_stand_in(BUCKET) as stand_in:
        base = {k: v for k, v in os.environ.items() if not k.startswith(("METAFLOW_", "ARGO_PROBE_"))}
        env = {**base, **stand_in, "METAFLOW_USER": "tester", "METAFLOW_DATASTORE_SYSROOT_GS": ROOT}
        # Local metadata lives under the working directory: keep it in tmp_path.
        failed = run_probe(["run"], {**env, "ARGO_PROBE_FAIL_IN_JOIN": "1"}, tmp_path)
        assert failed.returncode != 0, failed.stderr[-2000:]
        assert "ARGO_PROBE_FAIL_IN_JOIN is set" in failed.stdout + failed.stderr

        client = storage.Client(
            project="test",
            credentials=AnonymousCredentials(),
            client_options={"api_endpoint": stand_in["STORAGE_EMULATOR_HOST"]},
        )
        names = [blob.name for blob in client.list_blobs(BUCKET, prefix="metaflow/ArgoProbeFlow/")]
        assert any(name.startswith("metaflow/ArgoProbeFlow/data/") for name in names), names[:20]
        steps = {
            name.split("/")[3] for name in names if len(name.split("/")) > 4 and name.split("/")[2].isdigit()
        }
        assert {"start", "fit_chunk"} <= steps, sorted(steps)
        assert not (tmp_path / ".metaflow" / "ArgoProbeFlow" / "data").exists(), "artifacts went to disk"

        resumed = run_probe(["resume"], env, tmp_path)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        output = resumed.stdout + resumed.stderr
        cloned = re.findall(r"Cloning previously run task \d+/(\w+)/\d+", output)
        assert sorted(cloned) == ["fit_chunk", "fit_chunk", "start"], output[-3000:]
        assert re.search(r"/join/\d+ \(pid \d+\)\] Task finished successfully", output), output[-3000:]

        read = subprocess.run(
            [sys.executable, "-c", READ_BACK],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert read.returncode == 0, read.stderr[-2000:]
        result = json.loads(read.stdout.strip().splitlines()[-1])
        # The join ran after resume on the chunks the first run left in the bucket.
        assert result == {"successful": True, "chunks_done": [0, 1], "fitted": [0, 1]}
