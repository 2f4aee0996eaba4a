"""The board-side measurement server (``nas agent``).

``protocol`` (the wire format, shared with the client :mod:`nas.backends.remote`), ``checks`` (what an incoming
request and model may contain), ``measure`` (timing a checked request with onnxruntime, and the agent's
identity), ``token`` (the shared secret), ``server`` (HTTP). Nothing is imported here: the client imports
:mod:`nas.agent.protocol` alone, without the server.
"""
