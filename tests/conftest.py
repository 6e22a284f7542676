"""How `make test` spreads the suite over worker processes (pytest-xdist, `--dist loadgroup`).

Each test file is one group, so that a file's module-scoped runs (a flow run, a compile, a server)
happen once, in one worker. The tests of tests/flows that use the session's flow runs
(tests/flows/conftest.py) form one group too, so that those runs are made once per session; the
other tests of those files stay in their file's group.
"""

from __future__ import annotations

import pytest

# tests/flows/conftest.py's session runs: a tuning run and the trainings made from it. A test
# that uses only `flow_env` (the sample and a store of its own) runs its own flows, anywhere.
FLOW_SESSION_FIXTURES = {"tuning_run", "training_run", "worse_training_run"}


# First: xdist's own hook reads the groups to schedule by, and must find them already set.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        path = item.nodeid.split("::", 1)[0]
        uses_session_runs = path.startswith("tests/flows/") and FLOW_SESSION_FIXTURES & set(
            getattr(item, "fixturenames", ())
        )
        item.add_marker(pytest.mark.xdist_group("flow-session-runs" if uses_session_runs else path))
