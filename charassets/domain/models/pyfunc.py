"""MLflow "model from code" for an attribute head: MLflow loads this file, not a pickle.

Input: a 2-D array of record vectors (already masked for the head's field).
Output: one row per record with the predicted class (a list of classes for a multi-label
head), its probability and whether it clears the head's validation-chosen threshold.
"""

import mlflow
import numpy as np
import pandas as pd


class AttributeHeadModel(mlflow.pyfunc.PythonModel):
    # the model takes a plain float array and is logged with no typed signature on purpose: no
    # type-hint validation. Without this, ``PythonModel.__init_subclass__`` would wrap ``predict`` and
    # raise a UserWarning ("Add type hints to the `predict` method", mlflow/pyfunc/utils/data_validation.py)
    # each time MLflow executes this file, which it does for every head it logs.
    _skip_type_hint_validation = True

    def load_context(self, context):
        from charassets.domain.models.heads import TrainedHead

        self.head = TrainedHead.load(context.artifacts["head"])

    def predict(self, context, model_input, params=None):
        proba = self.head.predict_proba(np.asarray(model_input, dtype=np.float32))
        if self.head.multilabel:
            chosen = self.head.predict_sets(proba)
            return pd.DataFrame(
                {
                    "value": [[c for c, k in zip(self.head.classes, row, strict=True) if k] for row in chosen],
                    "confidence": np.where(chosen, proba, 1.0).min(1),
                    "above_threshold": chosen.any(1),
                }
            )
        best = proba.argmax(1)
        conf = proba.max(1)
        return pd.DataFrame({"value": [self.head.classes[i] for i in best], "confidence": conf, "above_threshold": self.head.fires(proba)})


mlflow.models.set_model(AttributeHeadModel())
