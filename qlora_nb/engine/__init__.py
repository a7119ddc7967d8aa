"""The engine: :class:`Session` (``session.py``) and the operations on it, grouped by capability.

Sub-packages, lowest first; each imports only from those before it (``tests/test_layers.py`` holds the
contract): ``scale`` → ``model`` → ``speed`` → ``forecast`` → ``export`` → ``generation`` → ``training``.
At the top sit the session facade and the lifecycle every operation shares (``lifecycle``, ``interrupts``,
``rollback``, ``arguments``).
"""
