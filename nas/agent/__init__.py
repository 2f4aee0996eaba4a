"""The board-side measurement server (``nas agent``).

``protocol`` (the wire format, shared with the client :mod:`nas.backends.remote`), ``request`` (what a
request's metadata may ask for), ``checks`` (what a model may be: the op allowlist, no external data, static
shapes, element caps), ``worker`` (the killable measuring child process), ``measure`` (timing with
onnxruntime, and the agent's identity), ``bounded`` (deadlines and budgets for reading a request), ``token``
(the shared secret), ``server`` (HTTP). Nothing is imported here: the client imports
:mod:`nas.agent.protocol` alone, without the server.
"""
