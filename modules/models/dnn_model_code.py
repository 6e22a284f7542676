"""The DNN model file MLflow logs ("models from code"): it names the class, the class is in the project.

A copy of this file is stored with each model and run by `mlflow.pyfunc.load_model`; the
project's loader (`modules.tracking.client.load_model`) runs it only after the model's files matched
the digest kept in the registry.
"""

from mlflow.models import set_model

from modules.models.dnn_pyfunc import KerasLabelClassifier

set_model(KerasLabelClassifier())
