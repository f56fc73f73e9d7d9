"""Why a turn ended early, as exceptions the split package raises on purpose."""

from __future__ import annotations

from shoal.errors import ShoalError


class Refusal(ShoalError):
    """A message (or a computation it led to) that the receiver will not accept; ``reason``
    says why. On the server it ends the sender's turn; on a device, the device's turn."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
