"""make run's broker (config/broker.py): a consumer sees a message whole or not at all."""

import os
from pathlib import Path
from queue import Empty

import pytest
from kombu import Connection

from config import broker


@pytest.fixture
def channel(tmp_path: Path):
    folders = {name: tmp_path / name for name in ("queue", "processed", "control")}
    for folder in folders.values():
        folder.mkdir()
    options = {
        "data_folder_in": str(folders["queue"]),
        "data_folder_out": str(folders["queue"]),
        "processed_folder": str(folders["processed"]),
        "control_folder": str(folders["control"]),
        "store_processed": False,
    }
    with Connection(f"{broker.SCHEME}://", transport_options=options) as connection:
        yield connection.default_channel, folders


def test_the_scheme_names_this_transport():
    with Connection(f"{broker.SCHEME}://") as connection:
        assert isinstance(connection.transport, broker.Transport)


def test_while_a_message_is_written_no_consumer_can_take_it(channel, monkeypatch):
    channel, folders = channel
    seen_while_writing = []
    rename = os.replace

    def replace_after_a_look(src: str, dst: str) -> None:
        # The moment kombu's own transport exposes an empty file: the message is written, not yet renamed.
        try:
            seen_while_writing.append(channel._get("inference"))
        except Empty:
            seen_while_writing.append(None)
        assert [p.name.endswith(broker.PARTIAL_SUFFIX) for p in folders["queue"].iterdir()] == [True]
        rename(src, dst)

    monkeypatch.setattr(broker.os, "replace", replace_after_a_look)
    channel._put("inference", {"body": "study 7"})
    assert seen_while_writing == [None]
    assert channel._get("inference") == {"body": "study 7"}
    with pytest.raises(Empty):
        channel._get("inference")
    assert not list(folders["processed"].iterdir())  # taken and removed, within the broker's folders


def test_messages_come_out_oldest_first_and_only_from_their_queue(channel):
    channel, _ = channel
    for n in range(3):
        channel._put("inference", {"n": n})
    channel._put("training", {"n": "t"})
    assert [channel._get("inference")["n"] for _ in range(3)] == [0, 1, 2]
    with pytest.raises(Empty):
        channel._get("inference")
    assert channel._get("training") == {"n": "t"}


def test_a_removed_processed_folder_is_made_again(channel):
    channel, folders = channel
    channel._put("inference", {"n": 1})
    folders["processed"].rmdir()
    assert channel._get("inference") == {"n": 1}


def test_a_file_that_is_not_a_message_is_set_aside_and_the_queue_goes_on(channel, caplog):
    channel, folders = channel
    (folders["queue"] / f"{0:020d}_x.inference.msg").write_bytes(b"")  # older than any message, and empty
    channel._put("inference", {"n": 2})
    assert channel._get("inference") == {"n": 2}  # the worker is not stopped by it
    assert [p.name for p in folders["processed"].iterdir()] == [f"{0:020d}_x.inference.msg"]
    assert "is not a readable message" in caplog.text


def test_a_message_read_is_delivered_even_if_its_file_cannot_be_removed(channel, monkeypatch):
    channel, _ = channel
    channel._put("inference", {"n": 3})

    def cannot_remove(path: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(broker.os, "remove", cannot_remove)
    assert channel._get("inference") == {"n": 3}


def test_a_message_that_cannot_be_written_leaves_no_partial_file(channel, monkeypatch):
    from kombu.exceptions import ChannelError

    channel, folders = channel

    def disk_full(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(broker.os, "replace", disk_full)
    with pytest.raises(ChannelError):
        channel._put("inference", {"n": 1})
    assert not list(folders["queue"].iterdir())


def test_a_file_that_cannot_be_moved_is_left_and_said_once(channel, monkeypatch, caplog):
    channel, _ = channel
    channel._put("inference", {"n": 4})

    def denied(src: str, dst: str) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(broker.os, "rename", denied)
    for _ in range(3):
        with pytest.raises(Empty):
            channel._get("inference")
    assert caplog.text.count("cannot move") == 1
    monkeypatch.undo()
    assert channel._get("inference") == {"n": 4}  # taken once it can be
