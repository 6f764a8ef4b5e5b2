"""A local stand-in for the Azure Functions host (``func start``).

It loads ``function_app.py``, reads each function's bindings from the decorators, and
drives them with the platform's semantics: blob triggers with receipts and a poison list,
Service Bus triggers with peek-lock and dead-lettering, NCRONTAB timers, and HTTP routes
under ``/api`` with function and master keys. See ``python -m devhost --help``.
"""
