"""Reference e-Office service implementing docs/eoffice-api.md, so bridges and integrators have a real peer.

It is deliberately a separate product component: nothing here imports ``homeserver`` or ``federation``.
"""
