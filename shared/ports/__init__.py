"""The ports to the outside world, each one small interface with two backends: blob storage
(``storage``), the message bus (``bus``) and storage queues (``storagequeue``; the platform's
poison queue). A local backend is the embedded default; an Azure one talks to Azurite and Azure.

May import: ``shared.core``. One contract test suite runs against both backends of each port.
"""
