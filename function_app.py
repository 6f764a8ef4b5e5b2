"""The Functions app: composes the blueprints its role selects (``MLOPS_APP_ROLE``); nothing else."""
import azure.functions as func

from functions.composition import blueprints

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)
for bp in blueprints():
    app.register_functions(bp)
