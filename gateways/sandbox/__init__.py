"""The provider sandbox: every built-in provider's HTTP API, simulated, with an inbox.

A product feature for local development, demos and CI, and the test double of every
adapter. See :mod:`gateways.sandbox.app` for the control API.
"""

from gateways.sandbox.app import build_app
from gateways.sandbox.server import SandboxServer, TlsFiles, self_signed_certificate
from gateways.sandbox.state import DEFAULT_ACCOUNTS, Faults, SandboxAccount, SandboxState

__all__ = [
    "DEFAULT_ACCOUNTS",
    "Faults",
    "SandboxAccount",
    "SandboxServer",
    "SandboxState",
    "TlsFiles",
    "build_app",
    "self_signed_certificate",
]
