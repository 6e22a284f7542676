"""The model file MLflow logs ("models from code") for every scikit-learn family: it names the class.

A copy of this file is stored with each model and run by `mlflow.pyfunc.load_model`; the
project's loader (`modules.tracking.client.load_model`) runs it only after the model's files matched
the digest kept in the registry, and replaces it by this very file first.
"""

from mlflow.models import set_model

from modules.models.sklearn_pyfunc import SkopsPipelineClassifier

set_model(SkopsPipelineClassifier())
