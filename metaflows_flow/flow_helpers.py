"""What both flows' steps share: reloading the split dataset and tagging step runs."""

from __future__ import annotations

from typing import Any

from metaflow import current

from modules.settings import get_settings


class SplitDataSteps:
    """Mixin for flows whose artifacts hold `data_path`, `label_column`, `data_summary`, `split`, `run_tags`."""

    def _reload(self) -> Any:
        """The dataset and the split made in TuningFlow's start step (checked by digest)."""
        from modules.pipeline import reload_data

        return reload_data(
            self.data_path,
            self.label_column,
            digest=self.data_summary["digest"],
            split=self.split,
            missing=get_settings().missing_values,
        )

    def _step_tags(self) -> dict[str, str]:
        """The flow run's tags, with this step's pathspec."""
        return {**self.run_tags, "metaflow.pathspec": current.pathspec}
