"""The registered DNN as an MLflow pyfunc: raw feature columns in, string labels out.

The fitted scikit-learn preprocessor (skops file), the Keras model (native `.keras` file)
and the class names travel as model artifacts; nothing is pickled but this small class.
"""

from __future__ import annotations

import json
from typing import Any

import mlflow.pyfunc
import numpy as np
import pandas as pd


class KerasLabelClassifier(mlflow.pyfunc.PythonModel):
    """Applies the fitted preprocessor, then the Keras model, and maps classes to labels."""

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        import keras
        import skops.io

        with open(context.artifacts["meta"]) as handle:
            meta = json.load(handle)
        self._classes = np.asarray(meta["classes"])
        self._preprocessor = skops.io.load(context.artifacts["preprocessor"], trusted=meta["trusted_types"])
        self._model = keras.saving.load_model(context.artifacts["keras_model"], compile=False)

    def unload(self) -> None:
        """Drop the loaded objects before the instance is pickled into the model."""
        for name in ("_classes", "_preprocessor", "_model"):
            self.__dict__.pop(name, None)

    def predict_proba(self, model_input: pd.DataFrame) -> np.ndarray:
        """Class probabilities, columns in `classes` order."""
        features = self._preprocessor.transform(model_input)
        return np.asarray(self._model.predict(np.asarray(features, dtype="float32"), verbose=0))

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> np.ndarray:
        return self._classes[np.argmax(self.predict_proba(model_input), axis=1)]
