"""The training pipeline: data loading and validation, fitting, conversion and the parity gate,
the exam, the stages (train, convert, register, promote), their messages and the isolation
that runs a stage in its own process.

May import: ``shared.core``, ``shared.ports``, ``shared.registry``, ``shared.serving`` (the
parity gate scores through the served graph), ``shared.policies``, ``shared.context``.
"""
