"""Online serving of a registered model with MLflow's request contract, and the prediction log.

- `contract`: the three request bodies MLflow's scoring server accepts (`dataframe_split`,
  `dataframe_records`, CSV), parsed and checked against the model's signature in one pass;
- `app`: the FastAPI app (`/invocations`, `/ping`, `/health`, `/version`, `/reload`) that
  follows the `champion` alias, and `python -m modules serve`, which runs it on uvicorn;
- `prediction_log`: every prediction appended, off the request path, to a local SQLite file.
"""
