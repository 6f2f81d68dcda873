"""MLflow "model from code" for an attribute head: MLflow loads this file, not a pickle.

Input: a 2-D array of record vectors (already masked for the head's field).
Output: one row per record with the predicted class, its probability and whether it
clears the head's validation-chosen threshold.
"""

import mlflow
import numpy as np
import pandas as pd


class AttributeHeadModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from charassets.domain.heads import TrainedHead

        self.head = TrainedHead.load(context.artifacts["head"])

    def predict(self, context, model_input, params=None):
        proba = self.head.predict_proba(np.asarray(model_input, dtype=np.float32))
        best = proba.argmax(1)
        conf = proba.max(1)
        return pd.DataFrame(
            {"value": [self.head.classes[i] for i in best], "confidence": conf, "above_threshold": conf >= self.head.threshold}
        )


mlflow.models.set_model(AttributeHeadModel())
