"""Decisions apart from the plumbing that carries them out: each policy is a function of the
state and the evidence to a decision with its reason, and does no I/O.

May import: ``shared.core``, ``shared.registry`` (record types).
"""
