"""Lock files that can be removed safely, sign-in turns, and who holds a lock."""

from __future__ import annotations

import fcntl
import os
import threading

import pytest

from agent.errors import StorageError
from agent.lockinfo import lock_holder
from agent.tokenstore import TokenStore


def test_removing_a_lock_while_someone_waits_never_lets_two_in(tmp_path):
    holder = TokenStore(tmp_path / "tokens")
    holder.save("p", {"access_token": "x"})
    waiter_has_it = threading.Event()
    release_waiter = threading.Event()

    def waiter() -> None:
        with TokenStore(tmp_path / "tokens").locked("p"):
            waiter_has_it.set()
            release_waiter.wait(10)

    with holder.locked("p"):
        assert holder.lock_path("p").exists()
        thread = threading.Thread(target=waiter, daemon=True)
        thread.start()
        assert not waiter_has_it.wait(0.3)      # blocked on the file about to go
        holder.remove_profile("p")              # unlinks it while holding it
        assert not holder.lock_path("p").exists()
    assert waiter_has_it.wait(10)
    assert not holder.path("p").exists()
    # The waiter noticed and holds the lock file that is there now...
    assert holder.lock_path("p").exists()
    # ...so a newcomer opening that path cannot get in beside it.
    with open(holder.lock_path("p"), "r+b") as newcomer:
        with pytest.raises(BlockingIOError):
            fcntl.flock(newcomer, fcntl.LOCK_EX | fcntl.LOCK_NB)
    release_waiter.set()
    thread.join(10)


def test_remove_profile_refuses_while_a_sign_in_is_under_way(tmp_path):
    store = TokenStore(tmp_path / "tokens")
    store.save("p", {"access_token": "x"})
    with store.sign_in_turn("p") as waited:
        assert waited is False
        with pytest.raises(StorageError, match=rf"a sign-in of profile 'p' is under way \(pid {os.getpid()}"):
            TokenStore(tmp_path / "tokens").remove_profile("p")
    assert TokenStore(tmp_path / "tokens").remove_profile("p") is True
    assert list((tmp_path / "tokens").iterdir()) == []


def test_a_second_turn_waits_and_says_so(tmp_path):
    first, second = TokenStore(tmp_path / "t"), TokenStore(tmp_path / "t")
    told = []
    got = threading.Event()
    result = {}

    def other() -> None:
        with second.sign_in_turn("p", on_wait=told.append) as waited:
            result["waited"] = waited
            got.set()

    with first.sign_in_turn("p"):
        thread = threading.Thread(target=other, daemon=True)
        thread.start()
        assert not got.wait(0.3)
    thread.join(10)
    assert result == {"waited": True}
    assert told and told[0] is not None and told[0].pid == os.getpid()


def test_lock_holder_unknown_without_a_lock(tmp_path):
    path = tmp_path / "x.lock"
    path.write_text("")
    assert lock_holder(path) is None
    assert lock_holder(tmp_path / "missing") is None
