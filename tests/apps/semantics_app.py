"""A small FunctionApp used only to test the local host's trigger semantics."""
import json
import time
import uuid

import azure.functions as func

from functions.root import context

app = func.FunctionApp(http_auth_level=func.AuthLevel.FUNCTION)


def _mark(kind: str, detail: str) -> None:
    context().storage.put("outbox", f"{kind}/{time.time():.6f}-{uuid.uuid4().hex[:6]}", detail.encode())


@app.function_name("inbox")
@app.blob_trigger(arg_name="blob", path="inbox/{name}", connection="MlopsStorage")
def inbox(blob: func.InputStream) -> None:
    if blob.name.split("/")[-1].startswith("fail"):
        raise RuntimeError("this blob always fails")
    _mark("blob", f"{blob.name}|{blob.read().decode()}")


@app.function_name("always_fails")
@app.service_bus_queue_trigger(arg_name="msg", queue_name="%TEST_FAIL_QUEUE%", connection="ServiceBusConnection")
def always_fails(msg: func.ServiceBusMessage) -> None:
    raise RuntimeError(f"cannot handle {msg.get_body().decode()}")


@app.function_name("echo_queue")
@app.service_bus_queue_trigger(arg_name="msg", queue_name="echo", connection="ServiceBusConnection")
def echo_queue(msg: func.ServiceBusMessage) -> None:
    _mark("queue", json.dumps({"body": msg.get_body().decode(), "id": msg.message_id, "count": msg.delivery_count}))


@app.function_name("tick")
@app.timer_trigger(arg_name="timer", schedule="%TEST_TIMER_SCHEDULE%")
def tick(timer: func.TimerRequest) -> None:
    _mark("timer", str(timer.past_due))


@app.function_name("open_route")
@app.route(route="open/{item}", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def open_route(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(json.dumps({"item": req.route_params["item"], "q": req.params.get("q")}),
                             mimetype="application/json")


@app.function_name("keyed_route")
@app.route(route="keyed", methods=["POST"], auth_level=func.AuthLevel.FUNCTION)
def keyed_route(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse(req.get_body(), status_code=201)


@app.function_name("admin_route")
@app.route(route="admin-only", methods=["GET"], auth_level=func.AuthLevel.ADMIN)
def admin_route(req: func.HttpRequest) -> func.HttpResponse:
    return func.HttpResponse("ok")


@app.function_name("crashes")
@app.route(route="crash", methods=["GET"], auth_level=func.AuthLevel.ANONYMOUS)
def crashes(req: func.HttpRequest) -> func.HttpResponse:
    raise ValueError("boom")
