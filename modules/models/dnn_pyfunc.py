"""The registered DNN as an MLflow pyfunc: raw feature columns in, string labels out.

The fitted scikit-learn preprocessor (skops file), the Keras model (native `.keras` file)
and the class names travel as model artifacts, all of them data: nothing is pickled. The
model is logged from code (`modules/models/dnn_model_code.py`), so loading it imports this class
from the installed project, never from the artifact store.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd

from modules.models.integrity import load_skops


class KerasLabelClassifier(mlflow.pyfunc.PythonModel):
    """Applies the fitted preprocessor, then the Keras model, and maps classes to labels."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        import keras

        with open(context.artifacts["classes"]) as handle:
            self._classes = np.asarray(json.load(handle)["classes"])
        # The types skops may build come from our allowlist, never from the model's files.
        self._preprocessor = load_skops(context.artifacts["preprocessor"])
        # safe_mode refuses Lambda layers and other code inside the .keras file.
        self._model = keras.saving.load_model(context.artifacts["keras_model"], compile=False, safe_mode=True)

    def predict_proba(self, model_input: pd.DataFrame) -> np.ndarray:
        """Class probabilities, columns in `classes` order."""
        features = self._preprocessor.transform(model_input)
        return np.asarray(self._model.predict(np.asarray(features, dtype="float32"), verbose=0))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        return self._classes[np.argmax(self.predict_proba(model_input), axis=1)]
