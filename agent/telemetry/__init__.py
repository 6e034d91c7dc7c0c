"""Telemetry: sensors -> durable outbox -> batched upload with a bearer token.

``sensors`` reads the board (:class:`~agent.telemetry.sensors.Reading`),
``outbox`` keeps readings until the endpoint accepted them, ``uploader``
POSTs them in batches. Import the submodules you need; this package
imports nothing heavy by itself.
"""

__all__ = ["sensors", "outbox", "uploader"]
