"""The AWS emulator behind ``embedded`` (moto), with its SQS queues made safe for concurrent pollers.

moto serves each request on its own thread, and its SQS queue mutates shared lists without a
lock: two ReceiveMessage calls can both see a message visible and both hand it out (measured with
6 threads receiving: 4 duplicates in 2,000 messages, 4 in 4,000; getmoto/moto#519), and two concurrent
DeleteMessage calls each rebuild the message list, so one can put back a message the other
deleted (it comes back after its visibility timeout) or drop one just sent (read in its code, not
seen in a test). Real SQS does neither, and a mapping runs many pollers at once, so every change
to a queue's messages takes one lock here, and a long poll waits between scans outside it.

moto's queue is also slow in its depth, which a deep local queue turns into duplicates (a delete
that arrives after the visibility timeout): every received message and every sent one computes
all of the queue's attributes, each a scan of every message that asks the time through datetime
objects, and a delete or visibility change looks for its receipt handle in every message. Measured
(receive 10 + delete them, one client): 69 ms at a depth of 200, 472 ms at 1,000, 2.5 s at 5,000.
Here the retention check reads the queue's setting, the clock is ``time.time``, and receipt
handles are found through an index, so those calls no longer depend on the depth
(docs/design.md, "The embedded emulator").

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
    _make_depth_independent(models)
    for cls, name in ((queue, "add_message"), (queue, "delete_message"),
                      (backend, "change_message_visibility"), (backend, "purge_queue")):
        setattr(cls, name, _locked(getattr(cls, name)))
    setattr(backend, "receive_message", _long_poll_outside_lock(_indexed(backend.receive_message)))  # noqa: B010


def _make_depth_independent(models: Any) -> None:
    """The calls a poller makes stop scanning the queue (see the module's docstring)."""
    models.unix_time = time.time  # moto's own builds two datetimes per call
    models.unix_time_millis = lambda: time.time() * 1000

    def retained(self: Any, queue_name: str, message: Any) -> bool:
        retention = int(self.get_queue(queue_name).message_retention_period)
        return bool(retention + message.sent_timestamp / 1000 > time.time())

    def delete_message(self: Any, receipt_handle: str) -> None:
        if receipt_handle in self.deleted_messages:
            return  # already deleted: SQS accepts it again
        message: Any = _handles(self).get(receipt_handle)
        try:
            self._messages.remove(message)  # identity: one pass in C, no Python per message
        except ValueError:
            raise models.ReceiptHandleIsInvalid from None
        self.pending_messages.discard(message)
        self.deleted_messages.update(message.all_receipt_handles)
        for handle in message.all_receipt_handles:
            _handles(self).pop(handle, None)

    original_visibility = models.SQSBackend.change_message_visibility

    def change_message_visibility(self: Any, queue_name: str, receipt_handle: str, visibility_timeout: int) -> None:
        queue = self.get_queue(queue_name)
        message = _handles(queue).get(receipt_handle)
        if message is None:
            original_visibility(self, queue_name, receipt_handle, visibility_timeout)  # moto's own error
            return
        if int(visibility_timeout) * 1000 + time.time() * 1000 - message.sent_timestamp > 43200 * 1000:
            raise models.InvalidParameterValue(
                f"Value {visibility_timeout} for parameter VisibilityTimeout is invalid. Reason: Total "
                "VisibilityTimeout for the message is beyond the limit [43200 seconds]")
        message.change_visibility(visibility_timeout)
        if message.visible and message in queue.pending_messages:
            queue.pending_messages.remove(message)

    models.SQSBackend.is_message_valid_based_on_retention_period = retained
    models.Queue.delete_message = delete_message
    models.SQSBackend.change_message_visibility = change_message_visibility


def _handles(queue: Any) -> dict[str, Any]:
    """A queue's receipt handles, each to the message it was handed out with."""
    index: dict[str, Any] | None = queue.__dict__.get("_broker_handles")
    if index is None:
        index = queue.__dict__["_broker_handles"] = {}
    return index


def _indexed(receive: Callable[..., Any]) -> Callable[..., Any]:
    """Receive, then index the receipt handles it gave out (moto returns copies of the messages)."""
    @functools.wraps(receive)
    def receive_message(self: Any, queue_name: str, *args: Any, **kwargs: Any) -> Any:
        result = receive(self, queue_name, *args, **kwargs)
        if result:
            queue = self.get_queue(queue_name)
            wanted = {m.id: m.receipt_handle for m in result}
            index = _handles(queue)
            for message in queue._messages:  # one pass, only when something was handed out
                handle = wanted.get(message.id)
                if handle is not None:
                    index[handle] = message
        return result
    return receive_message


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
