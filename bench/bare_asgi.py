"""The practical ceiling for serving over HTTP: a bare ASGI endpoint doing only ``session.run``.

    python -m bench.bare_asgi MODEL.onnx FEEDS.npz --port N

It ignores the request body's content (it reads it) and runs the session on prebuilt
inputs, answering a small fixed-shape JSON: no parsing, no validation, no routing.
"""
from __future__ import annotations

import argparse

import numpy as np
import orjson


def make_app(model_path: str, feeds_path: str):
    from shared.serving.graph import new_session

    with open(model_path, "rb") as f:
        session = new_session(f.read())
    loaded = np.load(feeds_path, allow_pickle=True)
    feeds = {k: loaded[k] for k in loaded.files}

    async def app(scope, receive, send):
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                while True:
                    msg = await receive()
                    await send({"type": msg["type"] + ".complete"})
                    if msg["type"] == "lifespan.shutdown":
                        return
            return
        more = True
        while more:
            msg = await receive()
            more = msg.get("more_body", False)
        out = session.run(None, feeds)[0]
        body = orjson.dumps({"predictions": out.ravel().tolist()})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return app


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model")
    parser.add_argument("feeds")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    import uvicorn

    uvicorn.run(make_app(args.model, args.feeds), host="127.0.0.1", port=args.port, log_level="warning",
                access_log=False, http="httptools", loop="uvloop", lifespan="on")


if __name__ == "__main__":
    main()
