"""kombu's Redis transport, made to survive garbage on a queue.

Stock kombu decodes each message popped from a queue list with ``json.loads`` and hands
it to the consumer; a list item that is not JSON, or JSON that is not a kombu message,
raises out of the worker's event loop and stops the worker ("Unrecoverable error"). This
channel catches exactly those decode and shape errors for the popped item, records the
rejection (:mod:`worker.rejections`) and goes on with the next message. Selected by
``broker_transport`` in :mod:`config.celery`; the ``redis://`` URLs stay as they are.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis

__all__ = ["Channel", "Transport"]


class Channel(kombu_redis.Channel):
    """A Redis channel that rejects undecodable queue items instead of dying on them."""

    def _brpop_read(self, **options: Any) -> bool:
        try:
            # The stubs do not list this private kombu method; it exists in every 5.x.
            return bool(super()._brpop_read(**options))  # type: ignore[misc]
        except (ValueError, KeyError, TypeError) as error:
            # ValueError covers json.JSONDecodeError; KeyError/TypeError a JSON value that
            # is not a kombu message envelope. The item is already popped: record, go on.
            from worker.rejections import record_rejected

            record_rejected(f"undecodable message on a queue ({type(error).__name__}); dropped")
            return True


class Transport(kombu_redis.Transport):
    """The Redis transport with :class:`Channel`."""

    Channel = Channel
