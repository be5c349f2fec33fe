"""Celery's filesystem broker (`make run`) with whole messages: kombu's filesystem transport, writing
each message under a name no consumer takes and then renaming it into the queue.

kombu's own ``_put`` creates the message file, then locks it and writes it, and its ``_get`` takes a
file without looking at the lock: a consumer that polls in between reads an empty message, fails on
its JSON (kombu#1551, open since 2022) and the message is gone; the study then waits for the requeue
job. bench/broker_race.py (20,000 messages, one producer and one consumer process, two more burning
CPU as make run's workers do): kombu's transport lost 24, 10 and 7 in three runs, this one none; with
the cores idle, 0-2 against none. A rename within a folder is atomic, so a consumer sees a message
whole or not at all.

Taken messages are moved aside within the broker's own folders (``processed_folder``, which must be on
the queue's filesystem), not to the system's temporary folder as kombu does when it does not keep
them, which may be another filesystem (a copy) or, on the development machines, a slow one. Names sort
in the order sent; messages left by kombu's transport (names in milliseconds) come after these.

Used through the ``cxrfs://`` broker URL, which importing this module registers with kombu.
"""

import contextlib
import functools
import logging
import os
import uuid
from queue import Empty
from time import time_ns

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

logger = logging.getLogger(__name__)
SCHEME = "cxrfs"
PARTIAL_SUFFIX = ".part"  # "<ns>_<uuid>.<queue>.msg.part" never matches "<queue>.msg"


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: dict, **kwargs: object) -> None:
        """Write the message under a partial name, then rename it into the queue."""
        # Zero-padded nanoseconds of the clock: names sort in the order they were sent, across restarts too.
        name = os.path.join(self.data_folder_out, f"{time_ns():020d}_{uuid.uuid4()}.{queue}.msg")
        try:
            with open(name + PARTIAL_SUFFIX, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(name + PARTIAL_SUFFIX, name)
        except OSError as exc:
            with contextlib.suppress(OSError):  # a disk full: no partial file stays behind
                os.remove(name + PARTIAL_SUFFIX)
            raise ChannelError(f"Cannot add file {name!r} to directory") from exc

    def _get(self, queue: str) -> dict:
        """The oldest whole message of ``queue``, moved aside (a rename: one consumer wins) and read. A file
        that cannot be taken or read is logged and left (Celery would stop the worker on an error here)."""
        wanted = f"{queue}.msg"
        for filename in sorted(os.listdir(self.data_folder_in)):
            if filename.partition(".")[2] != wanted:
                continue
            source, taken = os.path.join(self.data_folder_in, filename), os.path.join(self.processed_folder, filename)
            if not self._take(source, taken):
                continue
            try:
                with open(taken, "rb") as handle:
                    payload = loads(bytes_to_str(handle.read()))
            except (OSError, ValueError):  # unreadable, or not a message (a file from elsewhere): kept there
                logger.warning("Broker: %s is not a readable message; it stays in %s", filename, taken, exc_info=True)
                continue
            if not self.store_processed:
                with contextlib.suppress(OSError):  # the message is read: it is delivered even if this fails
                    os.remove(taken)
            return payload
        raise Empty()

    def _take(self, source: str, taken: str) -> bool:
        """Move a message file aside; False when another consumer took it first or it cannot be moved."""
        error = ""
        for _ in range(2):  # a second time after making a removed processed folder again
            try:
                os.rename(source, taken)
                return True
            except FileNotFoundError as exc:
                if not os.path.exists(source):
                    return False  # another consumer took it
                error = str(exc)
                os.makedirs(self.processed_folder, exist_ok=True)
            except OSError as exc:
                error = str(exc)
                break
        _warn_once(source, taken, error)
        return False


@functools.lru_cache(maxsize=1024)
def _warn_once(source: str, taken: str, error: str) -> None:
    """A file that cannot be moved is looked at on every poll (50 times a second): said once, not each time."""
    logger.warning("Broker: cannot move %s into %s: %s", source, taken, error)


class Transport(filesystem.Transport):
    Channel = Channel


TRANSPORT_ALIASES[SCHEME] = f"{__name__}:Transport"
