"""What both flows' steps share: the run's settings, its dataset and split, and step tags."""

from __future__ import annotations

from typing import Any

from metaflow import current

from modules.settings import Settings, get_settings


class SplitDataSteps:
    """Mixin for flows whose artifacts hold `dataset`, `split`, `data_path` and `run_tags`.

    The dataset is loaded, validated and hashed once, in TuningFlow's `start`; every later step
    (and MLPipelineFlow) uses that artifact, so all of them see exactly the rows that were split.
    """

    def _settings(self) -> Settings:
        """The settings for this run's dataset (its experiment and registered-model names)."""
        return get_settings().for_data(self.data_path)

    def _data(self) -> Any:
        """The dataset and the split made in TuningFlow's start step."""
        from modules.pipeline import PreparedData
        from modules.splitting import Split

        return PreparedData(dataset=self.dataset, split=Split.from_dict(self.split))

    def _step_tags(self) -> dict[str, str]:
        """The flow run's tags, with this step's pathspec."""
        return {**self.run_tags, "metaflow.pathspec": current.pathspec}
