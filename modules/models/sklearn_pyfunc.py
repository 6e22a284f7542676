"""Any registered scikit-learn family (SVM, logistic, ...) as an MLflow pyfunc: a fitted Pipeline from skops.

The pipeline takes the raw feature columns and returns string labels. It is loaded with the
project's skops allowlist (`modules.models.integrity.TRUSTED_SKOPS_TYPES`), not with a list of
trusted types stored next to it; the model is logged from code (`modules/models/sklearn_model_code.py`;
SVM versions registered before that name `svm_model_code.py`, which runs the same class).
"""

from __future__ import annotations

from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from modules.models.integrity import load_skops


class SkopsPipelineClassifier(mlflow.pyfunc.PythonModel):
    """Predicts with a fitted scikit-learn Pipeline saved with skops."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self._pipeline = load_skops(context.artifacts["pipeline"])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        return np.asarray(self._pipeline.predict(model_input))
