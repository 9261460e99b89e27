"""SurrealStore against the real embedded engine (mem:// and surrealkv://)."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import socket
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from surrealdb import RecordID

from convergence.settings import load_settings
from convergence.store import TABLES, StoreError, SurrealStore

NS, DB = "convergence", "test"


def run(coro: Awaitable[Any]) -> Any:
    async def _wrap() -> Any:
        return await coro

    return asyncio.run(_wrap())


def with_store(url: str, body: Callable[[SurrealStore], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with SurrealStore(url, NS, DB) as store:
            return await body(store)

    return asyncio.run(main())


def kv_url(tmp_path: Path, *parts: str) -> str:
    return f"surrealkv://{tmp_path.joinpath(*parts)}"


# -- basic CRUD -------------------------------------------------------------


def test_upsert_get_count_roundtrip_in_memory() -> None:
    async def body(store: SurrealStore) -> None:
        assert await store.count("alert") == 0
        await store.upsert("alert", "a-1", {"score": 0.9, "station": "gs-7"})
        assert await store.get("alert", "a-1") == {"id": "a-1", "score": 0.9, "station": "gs-7"}
        assert await store.get("alert", "missing") is None
        assert await store.count("alert") == 1
        assert await store.count("report") == 0

    with_store("mem://", body)


def test_upsert_is_idempotent_and_replaces_content() -> None:
    async def body(store: SurrealStore) -> None:
        await store.upsert("response", "r-1", {"v": 1, "only_in_first": True})
        await store.upsert("response", "r-1", {"v": 2})
        await store.upsert_many("response", [("r-1", {"v": 3}), ("r-2", {"v": 1})])
        await store.upsert_many("response", [("r-1", {"v": 3}), ("r-2", {"v": 1})])
        assert await store.count("response") == 2
        # CONTENT replaces the whole document: stale fields do not linger.
        assert await store.get("response", "r-1") == {"id": "r-1", "v": 3}

    with_store("mem://", body)


def test_upsert_many_spans_several_chunks() -> None:
    items = [(f"dl-{i:05d}", {"i": i}) for i in range(1234)]

    async def body(store: SurrealStore) -> None:
        await store.upsert_many("dead_letter", items)
        await store.upsert_many("dead_letter", [])
        assert await store.count("dead_letter") == 1234
        assert await store.get("dead_letter", "dl-01233") == {"id": "dl-01233", "i": 1233}

    with_store("mem://", body)


def test_doc_id_key_must_match_record_id() -> None:
    async def body(store: SurrealStore) -> None:
        await store.upsert("alert", "a-1", {"id": "a-1", "x": 1})
        assert await store.get("alert", "a-1") == {"id": "a-1", "x": 1}
        with pytest.raises(ValueError, match="different id"):
            await store.upsert("alert", "a-2", {"id": "other", "x": 1})
        assert await store.count("alert") == 1

    with_store("mem://", body)


def test_hostile_ids_and_values_are_bound_not_interpolated() -> None:
    nasty = "x'; DELETE alert; --⟩`\"{}"

    async def body(store: SurrealStore) -> None:
        await store.upsert("alert", "keep", {"v": 1})
        await store.upsert("alert", nasty, {"text": "RETURN 1; DELETE alert;"})
        assert await store.count("alert") == 2
        assert await store.get("alert", nasty) == {"id": nasty, "text": "RETURN 1; DELETE alert;"}

    with_store("mem://", body)


def test_results_are_plain_json() -> None:
    from surrealdb import RecordID

    when = dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC)

    async def body(store: SurrealStore) -> dict[str, Any] | None:
        await store.upsert(
            "run", "run-1", {"started": when, "ref": RecordID("alert", "a-1"), "tags": ["x"]}
        )
        return await store.get("run", "run-1")

    row = with_store("mem://", body)
    assert row == {
        "id": "run-1",
        "started": "2024-05-01T12:30:00+00:00",
        "ref": "alert:⟨a-1⟩",
        "tags": ["x"],
    }
    json.dumps(row)  # must not raise


def test_list_orders_limits_and_returns_plain_dicts() -> None:
    docs = [(f"rep-{i}", {"created_at": f"2024-01-0{i}T00:00:00Z", "n": i}) for i in range(1, 6)]

    async def body(store: SurrealStore) -> tuple[list[Any], ...]:
        await store.upsert_many("report", docs)
        return (
            await store.list("report"),
            await store.list("report", limit=2),
            await store.list("report", limit=3, descending=False),
            await store.list("report", order_by="n", limit=1),
            await store.list("report", limit=0),
        )

    newest, top2, oldest3, by_n, none = with_store("mem://", body)
    assert [r["id"] for r in newest] == ["rep-5", "rep-4", "rep-3", "rep-2", "rep-1"]
    assert [r["id"] for r in top2] == ["rep-5", "rep-4"]
    assert [r["id"] for r in oldest3] == ["rep-1", "rep-2", "rep-3"]
    assert by_n == [{"id": "rep-5", "created_at": "2024-01-05T00:00:00Z", "n": 5}]
    assert none == []
    assert all("__convergence_sort" not in r for r in newest)


# -- argument checking ---------------------------------------------------------


def test_unknown_table_and_bad_arguments_raise_value_error() -> None:
    async def body(store: SurrealStore) -> None:
        with pytest.raises(ValueError, match="unknown store table 'alerts'"):
            await store.upsert("alerts", "a", {})
        with pytest.raises(ValueError, match="unknown store table"):
            await store.count("user")
        with pytest.raises(ValueError, match="non-empty string"):
            await store.upsert("alert", "", {})
        with pytest.raises(ValueError, match="order_by"):
            await store.list("alert", order_by="created_at; DELETE alert")
        with pytest.raises(ValueError, match="limit"):
            await store.list("alert", limit=-1)

    with_store("mem://", body)
    assert {"alert", "report", "response", "dead_letter", "run", "campaign", "station", "revision",
            "event",
            "label", "chain", "involves", "cites", "triggered", "of"} == TABLES


def test_calls_on_a_closed_store_say_what_to_do() -> None:
    store = SurrealStore("mem://", NS, DB)
    with pytest.raises(StoreError, match=r"not open.*await store.open"):
        run(store.count("alert"))


def test_unsupported_scheme_is_refused_up_front() -> None:
    with pytest.raises(StoreError, match=r"rocksdb://x.*surrealkv://PATH"):
        SurrealStore("rocksdb://x", NS, DB)


def test_from_settings_uses_db_url_and_names() -> None:
    settings = load_settings(
        env={"CONVERGENCE_DB": "mem://", "CONVERGENCE_DB_DATABASE": "other"}, config_path=None
    )
    store = SurrealStore.from_settings(settings)
    assert (store.url, store.namespace, store.database) == ("mem://", "convergence", "other")

    async def body(s: SurrealStore) -> int:
        await s.upsert("run", "r", {})
        return await s.count("run")

    async def main() -> int:
        async with store as s:
            return await body(s)

    assert asyncio.run(main()) == 1


# -- surrealkv: durability and locking -------------------------------------------


def test_surrealkv_creates_parent_dirs_and_survives_reopen(tmp_path: Path) -> None:
    url = kv_url(tmp_path, "deep", "er", "db")

    async def write(store: SurrealStore) -> None:
        await store.upsert_many("alert", [(f"a-{i}", {"i": i}) for i in range(300)])
        await store.upsert("run", "run-1", {"status": "done"})

    async def read(store: SurrealStore) -> tuple[int, Any, Any]:
        return (
            await store.count("alert"),
            await store.get("alert", "a-299"),
            await store.get("run", "run-1"),
        )

    with_store(url, write)
    assert (tmp_path / "deep" / "er").is_dir()
    assert with_store(url, read) == (
        300,
        {"id": "a-299", "i": 299},
        {"id": "run-1", "status": "done"},
    )


def test_surrealkv_second_open_in_same_process_is_refused(tmp_path: Path) -> None:
    url = kv_url(tmp_path, "db")

    async def main() -> int:
        async with SurrealStore(url, NS, DB) as first:
            await first.upsert("alert", "a", {})
            with pytest.raises(StoreError, match="already open in this process"):
                await SurrealStore(url, NS, DB).open()
        # Closing releases the path; the next open works and sees the data.
        async with SurrealStore(url, NS, DB) as again:
            return await again.count("alert")

    assert asyncio.run(main()) == 1


def test_surrealkv_open_in_another_process_is_refused(tmp_path: Path) -> None:
    url = kv_url(tmp_path, "db")
    child = textwrap.dedent(
        f"""
        import asyncio
        from convergence.store import StoreError, SurrealStore
        async def main():
            try:
                await SurrealStore({url!r}, "ns", "db").open()
            except StoreError as exc:
                print(exc)
        asyncio.run(main())
        """
    )

    async def main() -> str:
        async with SurrealStore(url, NS, DB):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", child, stdout=subprocess.PIPE
            )
            out, _ = await proc.communicate()
            return out.decode()

    message = asyncio.run(main())
    assert "another process" in message and url in message


def test_unwritable_path_gives_an_actionable_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    url = kv_url(tmp_path, "a-file", "sub", "db")
    with pytest.raises(StoreError) as err:
        run(SurrealStore(url, NS, DB).open())
    assert url in str(err.value)
    assert "writable" in str(err.value) and "mem://" in str(err.value)


def test_unreachable_server_error_names_url_but_not_password() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"ws://127.0.0.1:{port}"
    store = SurrealStore(url, NS, DB, user="root", password="hunter2")
    with pytest.raises(StoreError) as err:
        run(store.open())
    text = str(err.value)
    assert url in text and "server is running" in text and "hunter2" not in text
    assert not store.is_open

    redacted = SurrealStore("ws://root:hunter2@db.example:8000", NS, DB)
    assert redacted.url == "ws://***@db.example:8000"


def test_close_is_idempotent() -> None:
    async def main() -> None:
        store = SurrealStore("mem://", NS, DB)
        await store.open()
        await store.open()  # no-op
        assert store.is_open
        await store.close()
        await store.close()
        assert not store.is_open

    asyncio.run(main())


# -- graph relations and read queries ----------------------------------------------------


def test_relations_are_real_graph_edges_written_idempotently() -> None:
    async def body(store: SurrealStore) -> tuple[Any, Any, int]:
        await store.upsert_many("station", [("s-1", {"kind": "news"}), ("s-2", {"kind": "sensor"})])
        await store.upsert("report", "r-1", {"level": "converged"})
        edges = [("r-1|s-1", {"in": "report:r-1", "out": "station:s-1", "share": 0.6}),
                 ("r-1|s-2", {"in": "report:r-1", "out": "station:s-2", "share": 0.4})]
        await store.upsert_many("involves", edges)
        await store.upsert_many("involves", [("r-1|s-1", {"in": "report:r-1", "out": "station:s-1",
                                                          "share": 0.7})])
        walked = await store.select("walk", "SELECT record::id(id) AS s FROM $r->involves->station",
                                    {"r": RecordID("report", "r-1")})
        back = await store.select("back", "SELECT record::id(id) AS r FROM $s<-involves<-report",
                                  {"s": RecordID("station", "s-1")})
        return walked, back, (await store.get("involves", "r-1|s-1") or {}).get("share")

    walked, back, share = with_store("mem://", body)
    assert sorted(w["s"] for w in walked) == ["s-1", "s-2"] and back == [{"r": "r-1"}]
    assert share == 0.7


def test_a_malformed_edge_is_refused_before_anything_is_written() -> None:
    async def body(store: SurrealStore) -> None:
        for doc, bad in (({"out": "station:s"}, "'in'"), ({"in": "report:r", "out": "nowhere"}, "'out'"),
                         ({"in": "involves:x", "out": "station:s"}, "'in'")):
            with pytest.raises(ValueError, match=f"needs {bad} as 'TABLE:ID'"):
                await store.upsert("involves", "e", doc)
        assert await store.count("involves") == 0

    with_store("mem://", body)


def test_select_returns_plain_rows() -> None:
    async def body(store: SurrealStore) -> Any:
        await store.upsert("alert", "a-1", {"score": 0.5, "at": dt.datetime(2024, 5, 1, tzinfo=dt.UTC)})
        return await store.select("read", "SELECT * FROM alert WHERE score > $min", {"min": 0.1})

    assert with_store("mem://", body) == [{"id": "a-1", "score": 0.5, "at": "2024-05-01T00:00:00+00:00"}]
# -- issue 11: what the engine cannot take, faults, and read-only opens ----------------


def test_nul_bytes_and_lone_surrogates_are_stored_and_read_back() -> None:
    """The engine stores a NUL but then cannot serialise the record again; the store
    writes visible escapes instead, so list() and get() keep working."""
    doc = {"payload": "ab\x00cd", "lone": "\udc80x", "nested": {"k\x00": ["\x00"]},
           "created_at": "2024-05-01T00:00:00Z"}

    async def body(store: SurrealStore) -> tuple[Any, Any]:
        await store.upsert("dead_letter", "d-1", doc)
        return await store.get("dead_letter", "d-1"), await store.list("dead_letter")

    got, listed = with_store("mem://", body)
    assert got["payload"] == "ab\\x00cd" and got["lone"] == "\\udc80x"
    assert got["nested"] == {"k\\x00": ["\\x00"]}
    assert listed == [got]


def _holder(url: str) -> str:
    """A child process that opens ``url``, says 'open' and waits for its stdin to close."""
    return textwrap.dedent(
        f"""
        import asyncio, sys
        from convergence.store import SurrealStore
        async def main():
            async with SurrealStore({url!r}, "ns", "db"):
                print("open", flush=True)
                sys.stdin.read()
        asyncio.run(main())
        """
    )


@pytest.mark.parametrize("link", ["database", "parent"])
def test_the_single_writer_lock_sees_through_symlinks(tmp_path: Path, link: str) -> None:
    real = tmp_path / "real" / "db"
    real.parent.mkdir()
    if link == "database":
        real.mkdir()
        (tmp_path / "alias").symlink_to(real)
        alias = tmp_path / "alias"
    else:
        (tmp_path / "alias-dir").symlink_to(real.parent)
        alias = tmp_path / "alias-dir" / "db"
    holder = subprocess.Popen([sys.executable, "-c", _holder(f"surrealkv://{real}")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "open"
        with pytest.raises(StoreError, match="another process"):
            run(SurrealStore(f"surrealkv://{alias}", NS, DB).open())
    finally:
        holder.communicate("", timeout=60)
    assert holder.returncode == 0
    with_store(f"surrealkv://{alias}", lambda s: s.count("alert"))  # free again once closed


def test_a_reader_never_creates_a_database(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent" / "dir" / "db"
    with pytest.raises(StoreError, match=r"no database at .*does not exist"):
        run(SurrealStore(f"surrealkv://{missing}", NS, DB).open(create=False))
    assert not (tmp_path / "nonexistent").exists()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(StoreError, match="is a file, not a database directory"):
        run(SurrealStore(f"surrealkv://{a_file}", NS, DB).open(create=False))

    async def read_back() -> int:
        store = SurrealStore(f"surrealkv://{tmp_path / 'db'}", NS, DB)
        await store.open(create=False)
        try:
            return await store.count("alert")
        finally:
            await store.close()

    with_store(f"surrealkv://{tmp_path / 'db'}", lambda s: s.upsert("alert", "a", {}))
    assert asyncio.run(read_back()) == 1


def test_an_unwritable_lock_file_is_not_blamed_on_another_process() -> None:
    with pytest.raises(StoreError) as err:
        run(SurrealStore("surrealkv:///proc/db", NS, DB).open())
    text = str(err.value)
    assert "another process" not in text
    assert "lock file /proc/db.lock" in text and "writable" in text


def test_an_unreachable_http_server_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(StoreError) as err:
        run(SurrealStore(f"http://127.0.0.1:{port}", NS, DB).open())
    text = str(err.value)
    assert "TypeError" not in text and "missing 1 required" not in text
    assert f"http://127.0.0.1:{port}" in text and "server is running" in text


@pytest.mark.parametrize(("url", "words"), [
    ("mem://anything", "takes no path"), ("surrealkv://", "needs the path"),
    ("http://", "needs a server address")])
def test_urls_settings_refuse_are_refused_by_the_store_too(url: str, words: str) -> None:
    with pytest.raises(StoreError, match=words):
        SurrealStore(url, NS, DB)


# A child that fills its disk (or hits its file-size limit), gets space back, writes on
# and closes; the parent then counts what a fresh open reads back.
_FULL_DISK_CHILD = textwrap.dedent(
    """
    import asyncio, json, resource, signal, subprocess, sys
    from convergence.store import StoreError, SurrealStore
    url, how, mount = sys.argv[1], sys.argv[2], sys.argv[3]
    async def main():
        store = SurrealStore(url, "convergence", "test")
        await store.open()
        if how == "rlimit":
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails, EFBIG
            resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, resource.RLIM_INFINITY))
        before, error = 0, ""
        for i in range(10_000):
            try:
                await store.upsert("alert", f"before-{i}", {"i": i, "pad": "p" * 3000})
                before += 1
            except StoreError as exc:
                error = str(exc)
                break
        if how == "rlimit":
            resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
        else:
            subprocess.run(["mount", "-o", "remount,size=8m", mount], check=True)
        after = 0
        for i in range(5):
            try:
                await store.upsert("alert", f"after-{i}", {"i": i})
                after += 1
            except StoreError as exc:
                error = error or str(exc)
        await store.close()
        print(json.dumps({"before": before, "after": after, "error": error}))
    asyncio.run(main())
    """
)


def _tmpfs(tmp_path: Path) -> Path:
    import os

    if os.geteuid() != 0:
        pytest.skip("a real full filesystem needs a tmpfs mount, which needs root "
                    "(the RLIMIT_FSIZE case covers this without root)")
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48k", "tmpfs", str(mount)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip()}); the RLIMIT_FSIZE "
                    "case covers this")
    return mount


@pytest.mark.parametrize("how", ["rlimit", "tmpfs"])
def test_a_full_disk_fails_writes_then_heals_and_nothing_written_is_hidden(
        tmp_path: Path, how: str) -> None:
    mount = _tmpfs(tmp_path) if how == "tmpfs" else tmp_path
    try:
        url = f"surrealkv://{mount / 'db'}"
        child = subprocess.run([sys.executable, "-c", _FULL_DISK_CHILD, url, how, str(mount)],
                               capture_output=True, text=True, timeout=120, check=False)
        assert child.returncode == 0, child.stderr
        got = json.loads(child.stdout.strip().splitlines()[-1])
        assert got["before"] >= 1
        assert "File too large" in got["error"] or "No space left" in got["error"]
        assert "the disk is full or a file size limit was reached" in got["error"]  # the hint
        # once there is room again the same store writes on (the engine is reopened, which
        # truncates the torn record the failed write left), and a fresh open reads back
        # every record that was confirmed - before the disk filled and after
        assert got["after"] == 5

        async def read(store: SurrealStore) -> list[str]:
            return sorted(r["id"] for r in await store.list("alert", limit=10_000))

        ids = with_store(url, read)
        assert ids == sorted([f"before-{i}" for i in range(got["before"])]
                             + [f"after-{i}" for i in range(5)])
    finally:
        if how == "tmpfs":
            subprocess.run(["umount", str(mount)], check=False)
