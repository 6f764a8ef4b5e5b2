"""Guarded rollout, the decision side: the evidence of a step read from the inference log and
feedback (``evidence``), and the loop that judges each active rollout with the policy in
``shared.policies.rollout`` and carries its decision out: starting, advancing, promoting, rolling
back, and the operator's actions (``loop``).

May import: ``shared.core``, ``shared.ports``, ``shared.registry``, ``shared.serving``,
``shared.policies``, ``shared.context``, ``shared.pipeline``, ``shared.monitoring``.
"""
