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
import os
import uuid
from queue import Empty
from time import monotonic_ns

from kombu.exceptions import ChannelError
from kombu.transport import TRANSPORT_ALIASES, filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads

SCHEME = "cxrfs"
PARTIAL_SUFFIX = ".part"  # "<ms>_<uuid>.<queue>.msg.part" never matches "<queue>.msg"


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: dict, **kwargs: object) -> None:
        """Write the message under a partial name, then rename it into the queue."""
        # Zero-padded nanoseconds of the system's monotonic clock: names sort in the order they were sent.
        name = os.path.join(self.data_folder_out, f"{monotonic_ns():020d}_{uuid.uuid4()}.{queue}.msg")
        try:
            with open(name + PARTIAL_SUFFIX, "wb") as handle:
                handle.write(str_to_bytes(dumps(payload)))
            os.replace(name + PARTIAL_SUFFIX, name)
        except OSError as exc:
            with contextlib.suppress(OSError):  # a disk full: no partial file stays behind
                os.remove(name + PARTIAL_SUFFIX)
            raise ChannelError(f"Cannot add file {name!r} to directory") from exc

    def _get(self, queue: str) -> dict:
        """The oldest whole message of ``queue``, moved aside (a rename: one consumer wins) and read."""
        wanted = f"{queue}.msg"
        for filename in sorted(os.listdir(self.data_folder_in)):
            if filename.partition(".")[2] != wanted:
                continue
            source, taken = os.path.join(self.data_folder_in, filename), os.path.join(self.processed_folder, filename)
            try:
                os.rename(source, taken)
            except OSError as exc:
                if isinstance(exc, FileNotFoundError) and not os.path.exists(source):
                    continue  # another consumer took it
                # Never silently (a missing processed folder, another filesystem): the worker says so.
                raise ChannelError(f"Cannot take {filename!r} into {self.processed_folder!r}: {exc}") from exc
            try:
                with open(taken, "rb") as handle:
                    payload = handle.read()
                if not self.store_processed:
                    os.remove(taken)
            except OSError as exc:
                raise ChannelError(f"Cannot read file {taken!r} from queue.") from exc
            return loads(bytes_to_str(payload))
        raise Empty()


class Transport(filesystem.Transport):
    Channel = Channel


TRANSPORT_ALIASES[SCHEME] = f"{__name__}:Transport"
