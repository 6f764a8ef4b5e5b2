"""The Functions app: composes the blueprints in ``functions/``; nothing else."""
import azure.functions as func

from functions import http_api, monitor, pipeline, runs_api, train

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(train.bp)
app.register_functions(pipeline.bp)
app.register_functions(monitor.bp)
app.register_functions(http_api.bp)
app.register_functions(runs_api.bp)
