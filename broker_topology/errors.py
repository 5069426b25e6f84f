"""The error tree both sides share. The class decides what happens next.

    SealpoolError
      ConfigError             bad settings or flags: one-line message, exit code 2
      BrokerError
        BrokerUnreachable     cannot connect (after retries, when the caller asked to give up)
        Unroutable            a confirmed publish was returned (no queue bound)
        DeliveryLost          an ack for a delivery whose channel is gone; the broker requeued it
        TopologyMismatch      a queue exists with other arguments than ours
      MessageError            a message that does not decode or validate: poison, never retried
      JobError                raised by executors; `error_class` travels in the Result
        TemporaryError        retry with backoff until the phase's attempt limit
        PermanentError        the sector fails with the reason
        NeedsData             this worker does not hold the sector's files
"""

from __future__ import annotations

from .messages import ErrorClass


class SealpoolError(Exception):
    """Base of every error sealpool raises on purpose."""


class ConfigError(SealpoolError):
    """A setting, flag or config file value is wrong; the message names it."""


class BrokerError(SealpoolError):
    pass


class BrokerUnreachable(BrokerError):
    pass


class Unroutable(BrokerError):
    pass


class DeliveryLost(BrokerError):
    pass


class TopologyMismatch(BrokerError):
    pass


#: A MessageError's detail is cut to this many characters: it goes into logs and headers,
#: and a hostile message must not choose how much of itself is echoed there.
MESSAGE_DETAIL_CHARS = 300


class MessageError(SealpoolError):
    """`reason` is a short machine-readable tag (`poison.Reason`: not_json, schema,
    oversized, ...). `detail` is one printable line, at most MESSAGE_DETAIL_CHARS long."""

    def __init__(self, reason: str, detail: str) -> None:
        detail = "".join(c if c.isprintable() else "?" for c in detail[:MESSAGE_DETAIL_CHARS])
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class JobError(SealpoolError):
    error_class: ErrorClass = ErrorClass.TEMPORARY


class TemporaryError(JobError):
    error_class = ErrorClass.TEMPORARY


class PermanentError(JobError):
    error_class = ErrorClass.PERMANENT


class NeedsData(JobError):
    error_class = ErrorClass.NEEDS_DATA
