"""The wire protocols the server speaks, one module each: the Open Inference Protocol v2
(``v2``) and MLflow's scoring protocol (``mlflow``). Each turns bytes into a ``Batch`` and a
``Prediction`` into bytes; none of them knows HTTP or Azure Functions."""
