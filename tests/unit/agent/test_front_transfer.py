"""The front's single-flight bookkeeping: what readers may read, who joins a transfer, the spool folder."""

from __future__ import annotations

import os
import time

from multidict import CIMultiDict
from registry_cache.front import transfer as transfers
from registry_cache.front.transfer import HOLDBACK, BlobTransfer, TransferBoard

DIGEST = "sha256:" + "ab" * 32

def test_readers_get_all_but_the_last_byte_until_the_digest_is_verified():
    transfer = BlobTransfer(DIGEST, "/spool/x")
    transfer.started(10, CIMultiDict())

    transfer.wrote(4)
    assert transfer.readable() == 4 - HOLDBACK
    transfer.wrote(6)
    assert transfer.readable() == 10 - HOLDBACK
    transfer.finish()
    assert transfer.readable() == 10


def test_a_failed_transfer_wakes_its_readers():
    transfer = BlobTransfer(DIGEST, "/spool/x")
    waiting = transfer.progress()

    transfer.fail("short body")

    assert waiting.is_set()
    assert transfer.failed and transfer.error == "short body"
    transfer.fail("later reason")
    assert transfer.error == "short body"  # the first cause is the one reported


def test_a_second_request_joins_the_transfer_in_flight(tmp_path):
    board = TransferBoard(str(tmp_path))

    first = board.start(DIGEST)

    assert board.join(DIGEST) is first
    assert board.join("sha256:" + "cd" * 32) is None
    assert board.in_flight() == 1


def test_a_failed_transfer_is_not_joined_and_its_spool_goes(tmp_path):
    board = TransferBoard(str(tmp_path))
    transfer = board.start(DIGEST)
    open(transfer.spool_path, "wb").close()

    transfer.fail("wrong digest")
    assert board.join(DIGEST) is None
    board.forget(transfer)

    assert not os.path.exists(transfer.spool_path)
    assert board.all() == []


def test_a_finished_transfer_serves_late_requests_until_it_expires(tmp_path):
    board = TransferBoard(str(tmp_path), keep_seconds=30)
    transfer = board.start(DIGEST)
    transfer.finish()

    assert board.join(DIGEST) is transfer
    transfer.finished_at = time.monotonic() - 31
    assert board.join(DIGEST) is None


def test_forgetting_an_old_transfer_leaves_its_successor_registered(tmp_path):
    board = TransferBoard(str(tmp_path))
    old = board.start(DIGEST)
    old.fail("cut")
    new = board.start(DIGEST)

    board.forget(old)

    assert board.join(DIGEST) is new
    assert old.spool_path != new.spool_path


def test_the_spool_folder_is_emptied_of_crash_leftovers(tmp_path):
    spool = tmp_path / "spool"
    (spool / "stale-dir").mkdir(parents=True)
    (spool / "sha256-ab.1234.spool").write_bytes(b"half a blob")

    assert transfers.empty_spool_dir(str(spool)) == 2
    assert list(spool.iterdir()) == []
    assert transfers.empty_spool_dir(str(tmp_path / "new")) == 0
