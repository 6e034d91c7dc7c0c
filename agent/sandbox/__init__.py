"""Local stand-ins for the cloud: an identity provider and a telemetry receiver.

Real HTTP servers on 127.0.0.1, used by the tests, the benchmarks and
``entra-agent demo``. Import the modules themselves
(``agent.sandbox.idp``, ``agent.sandbox.receiver``); this package imports
nothing, so it costs nothing on a board that never runs them.
"""

__all__: list[str] = []
