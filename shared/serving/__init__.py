"""The request path: the runtime that loads versions, swaps them and routes a request to one
(``runtime``), ONNX graphs as served (``graph``), the codecs that turn a request into a typed
batch and back (``protocols``; they never import ``runtime``, and it parses nothing), the
inference log, feedback, the OpenAPI document, and ``inprocess`` (the three steps without HTTP).

May import: ``shared.core``, ``shared.ports``, ``shared.registry``. Never scikit-learn or pandas:
the serving app is built without them.
"""
