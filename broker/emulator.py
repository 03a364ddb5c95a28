"""The AWS emulator behind ``embedded`` (moto), with its SQS queues made safe for concurrent pollers.

moto serves each request on its own thread, and its SQS queue mutates shared lists without a
lock: two ReceiveMessage calls can both see a message visible and both hand it out (measured with
6 threads receiving: 4 duplicates in 2,000 messages, 4 in 4,000; getmoto/moto#519), and two concurrent
DeleteMessage calls each rebuild the message list, so one can put back a message the other
deleted (it comes back after its visibility timeout) or drop one just sent (read in its code, not
seen in a test). Real SQS does neither, and a mapping runs many pollers at once, so every change
to a queue's messages takes one lock here, and a long poll waits between scans outside it.

``python -m broker.emulator -H 127.0.0.1 -p PORT`` runs moto's standalone server the same way.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import Any

_LOCK = threading.RLock()  # one for all queues: each critical section is short and never waits
_BUSY_PAUSE_SECONDS = 0.02  # visible messages none of which can be handed out (a FIFO group in flight)


def make_sqs_atomic() -> None:
    """Patch moto's SQS backend (idempotent): receive, send, delete, visibility and purge each run
    under one lock; a long poll scans under the lock and waits between scans outside it."""
    from moto.sqs import models  # noqa: PLC0415 - optional extra, imported only in embedded mode

    backend, queue = models.SQSBackend, models.Queue
    if getattr(backend.receive_message, "_atomic", False):
        return
    for cls, name in ((queue, "add_message"), (queue, "delete_message"),
                      (backend, "change_message_visibility"), (backend, "purge_queue")):
        setattr(cls, name, _locked(getattr(cls, name)))
    setattr(backend, "receive_message", _long_poll_outside_lock(backend.receive_message))  # noqa: B010


def _locked(method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def locked(*args: Any, **kwargs: Any) -> Any:
        with _LOCK:
            return method(*args, **kwargs)
    return locked


def _long_poll_outside_lock(receive: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(receive)
    def receive_message(self: Any, queue_name: str, count: int, wait_seconds_timeout: int,  # noqa: PLR0917 - moto's
                        visibility_timeout: int, message_attribute_names: list[str] | None = None) -> Any:
        sqs_queue = self.get_queue(queue_name)
        deadline = time.monotonic() + (wait_seconds_timeout or 0)
        while True:
            with _LOCK:  # one scan: a message is marked received before anyone else looks at it
                result = receive(self, queue_name, count, 0, visibility_timeout, message_attribute_names)
            remaining = deadline - time.monotonic()
            if result or remaining <= 0:
                return result
            if sqs_queue.messages:
                time.sleep(_BUSY_PAUSE_SECONDS)
            else:
                sqs_queue.wait_for_messages(min(1.0, remaining))  # woken by a send; delays show within 1 s

    receive_message._atomic = True  # type: ignore[attr-defined]
    return receive_message


def main() -> None:
    """moto's standalone server (its own arguments) with atomic SQS queues."""
    from moto.server import main as moto_main  # noqa: PLC0415 - optional extra

    make_sqs_atomic()
    moto_main()


if __name__ == "__main__":
    main()
