"""The model file of SVM versions registered before the scikit-learn families shared one.

Those versions name this file; the loader replaces their copy by this one, so they keep
loading. New models of every scikit-learn family are logged with `sklearn_model_code.py`.
"""

from mlflow.models import set_model

from modules.models.sklearn_pyfunc import SkopsPipelineClassifier

set_model(SkopsPipelineClassifier())
