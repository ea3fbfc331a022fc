"""The core's kernel scenarios, from Python: what user space writes, BPF reads.

The reader is the `tld` tool (`tld dump PID --json`, see bpf_reader.py): a BPF
task iterator walking each thread's pages through the UPTRs of the pinned
`tld_data_map`. Each scenario runs in a fresh interpreter (a fresh runtime)
and dumps itself while its threads are alive.

Without root (or CAP_BPF + CAP_PERFMON) these tests are skipped with a
message, except under CI=true, where they fail.
"""

from __future__ import annotations

import pytest


def test_basic_many_threads(run_kernel):
    run_kernel("""
        tld.attach()
        prio = tld.key("priority", "i")
        request = tld.key("request_id", "Q")
        blob = tld.key("blob", 16)
        ratio = tld.key("ratio", "d")
        prio.set(-1)
        main_tid = threading.get_native_id()
        n = 16
        ready = threading.Barrier(n + 1)
        done = threading.Event()
        tids = {}
        def worker(i):
            tids[i] = threading.get_native_id()
            prio.set(i - 8)
            request.set(2**63 + i)
            blob.set(f"thread {i}".encode())
            ratio.set(i / 4)
            ready.wait()
            done.wait()
        ts = [threading.Thread(target=worker, args=(i,), name=f"w{i}") for i in range(n)]
        for t in ts: t.start()
        ready.wait()
        try:
            doc = dump()
        finally:
            done.set()
            for t in ts: t.join()
        seen = threads(doc)
        assert set(seen) == set(tids.values()) | {main_tid}, (sorted(seen), tids, main_tid)
        assert keys(doc) == {k.name: (k.offset, k.size) for k in (prio, request, blob, ratio)}, keys(doc)
        for i, tid in tids.items():
            v = seen[tid]
            assert v["priority"] == i - 8, v
            assert v["request_id"] == (2**63 + i) - 2**64, v      # the tool prints signed integers
            assert v["blob"] == f"thread {i}".encode().ljust(16, b"\\0"), v
            assert v["ratio"] == struct.unpack("q", struct.pack("d", i / 4))[0], v
        assert seen[main_tid]["priority"] == -1
        assert seen[main_tid]["request_id"] == 0
    """)


def test_attach_after_first_access(run_kernel):
    # Threads that made their first access before the map was attached
    # register with it on their next access.
    run_kernel("""
        k = tld.key("v", "i")
        k.set(1)
        go, attached, done = threading.Event(), threading.Event(), threading.Event()
        def worker():
            k.set(2)
            go.set()
            attached.wait()
            k.set(3)
            done.wait()
        t = threading.Thread(target=worker)
        t.start(); go.wait()
        assert tld.runtime_stats().attached_maps == 0
        tld.attach()
        tld.attach()  # the same map again: nothing changes
        assert tld.runtime_stats().attached_maps == 1
        assert threads(dump()) == {}, "nothing registered before a data access"
        attached.set()
        k.get()
        assert settle(lambda: len(threads(dump())) == 2)
        seen = threads(dump())
        done.set(); t.join()
        assert sorted(v["v"] for v in seen.values()) == [1, 3], seen
    """)


def test_errors_leave_published_values_unchanged(run_kernel):
    run_kernel("""
        tld.attach()
        a = tld.create_key("a", "i")
        b = tld.create_key("b", 16)
        a.set(1234)
        b.set(b"published")
        tid = threading.get_native_id()
        before = dump()
        expected_keys = {"a": (0, 4), "b": (8, 16)}
        assert keys(before) == expected_keys, keys(before)
        used = 8 + 16
        failures = [
            ("EEXIST", lambda: tld.create_key("a", "i")),
            ("EEXIST", lambda: tld.key("b", 8)),
            ("E2BIG", lambda: tld.create_key("too_big", tld.runtime_stats().data_size - used + 1)),
            ("EINVAL", lambda: tld.create_key("zero", 0)),
            ("EINVAL", lambda: tld.create_key("nul\\0name", 4)),
            ("EINVAL", lambda: tld.create_key("", 4)),
            ("ENAMETOOLONG", lambda: tld.create_key("n" * 62, 4)),
            ("ENAMETOOLONG", lambda: tld.create_key("\\u00e9" * 31, 4)),
        ]
        for name, call in failures:
            try:
                call()
            except TldError as e:
                assert e.errno == getattr(errno, name), (name, e)
            else:
                raise AssertionError(f"{name} expected")
            after = dump()
            assert keys(after) == expected_keys, (name, keys(after))
            assert threads(after)[tid] == {"a": 1234, "b": b"published".ljust(16, b"\\0")}, (name, threads(after))
            assert a.get() == 1234 and b.get() == b"published".ljust(16, b"\\0")
        # Using up the reserve: every 1-byte key takes 8 bytes, then E2BIG.
        # (ENOSPC has its own test: the reserve runs out before the slots.)
        created = []
        while True:
            try:
                created.append(tld.create_key(f"s{len(created)}", 1))
            except TldError as e:
                assert e.errno == errno.E2BIG, e
                break
        assert len(created) == (tld.runtime_stats().data_size - used) // 8
        after = dump()
        assert threads(after)[tid]["a"] == 1234 and len(after["keys"]) == 2 + len(created)
    """)


def test_enospc_leaves_published_values_unchanged(run_kernel):
    run_kernel("""
        tld.attach()
        max_slots = os.sysconf("SC_PAGE_SIZE") // 64 - 1
        # Before any thread touches its data, keys grow every block, so
        # every slot can be used.
        ks = [tld.create_key(f"k{i}", "B") for i in range(max_slots)]
        for i, k in enumerate(ks):
            k.set(i)
        tid = threading.get_native_id()
        try:
            tld.create_key("one_more", 1)
        except TldError as e:
            assert e.errno == errno.ENOSPC, e
        else:
            raise AssertionError("ENOSPC expected")
        doc = dump()
        assert len(doc["keys"]) == max_slots and "one_more" not in keys(doc)
        assert threads(doc)[tid] == {f"k{i}": i for i in range(max_slots)}
    """)


def test_creation_race(run_kernel):
    run_kernel("""
        tld.attach()
        n, names = 16, 6
        start = threading.Barrier(n)
        ready = threading.Barrier(n + 1)
        done = threading.Event()
        got, created, errors, tids = {}, {}, {}, {}
        def worker(i):
            tids[i] = threading.get_native_id()
            start.wait()
            # Everyone asks for the same names at once: get-or-create...
            got[i] = [tld.key(f"shared_{j}", "i").offset for j in range(names)]
            # ...and creates the same strict names: one winner each.
            try:
                created[i] = tld.create_key(f"strict_{i % 4}", "q").offset
            except TldError as e:
                errors[i] = e.errno
            for j in range(names):
                tld.key(f"shared_{j}", "i").set(i * 100 + j)
            ready.wait()
            done.wait()
        ts = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
        for t in ts: t.start()
        ready.wait()
        try:
            doc = dump()
        finally:
            done.set()
            for t in ts: t.join()
        assert all(offs == got[0] for offs in got.values()), got
        assert len(set(got[0])) == names
        assert len(created) == 4 and set(errors.values()) == {errno.EEXIST} and len(errors) == n - 4, (created, errors)
        names_seen = [k["name"] for k in doc["keys"]]
        assert len(names_seen) == len(set(names_seen)) == names + 4, names_seen
        assert {k.name for k in tld.keys()} == set(names_seen)
        by_name = keys(doc)
        for j in range(names):
            assert by_name[f"shared_{j}"][0] == got[0][j]
        seen = threads(doc)
        for i, tid in tids.items():
            for j in range(names):
                assert seen[tid][f"shared_{j}"] == i * 100 + j, (i, j, seen[tid])
    """)


# Python has no keyless first access, so at least one key exists before it.
@pytest.mark.parametrize("reserve,static_keys", [(64, 1), (0, 1), (0, 2), (64, 3), (128, 1)])
def test_dynamic_budget(run_kernel, reserve, static_keys):
    run_kernel(f"""
        reserve, static_keys = {reserve}, {static_keys}
        tld.set_dynamic_reserve(reserve)
        tld.attach()
        # Keys made before any thread touched its data grow every block.
        statics = [tld.create_key(f"static_{{i}}", "I") for i in range(static_keys)]
        assert tld.runtime_stats().data_size == 8 * static_keys + reserve
        for i, k in enumerate(statics):
            k.set(0xA000 + i)  # the first access freezes the size
        s = tld.runtime_stats()
        assert s.frozen and s.data_size == 8 * static_keys + reserve, s
        dyn = []
        while True:
            try:
                dyn.append(tld.create_key(f"dyn_{{len(dyn)}}", "I"))
            except TldError as e:
                assert e.errno == errno.E2BIG, e
                break
        assert len(dyn) == reserve // 8, len(dyn)  # each 4-byte key takes 8 bytes
        for i, k in enumerate(dyn):
            k.set(0xB000 + i)
        seen = threads(dump())[threading.get_native_id()]
        expected = {{f"static_{{i}}": 0xA000 + i for i in range(static_keys)}}
        expected.update({{f"dyn_{{i}}": 0xB000 + i for i in range(len(dyn))}})
        assert seen == expected, seen
        try:
            tld.set_dynamic_reserve(reserve + 8)
        except TldError as e:
            assert e.errno == errno.EBUSY, e
        else:
            raise AssertionError("the reserve changed after the first access")
    """)


def test_thread_exit_leaves_nothing_behind(run_kernel):
    run_kernel("""
        tld.attach()
        k = tld.key("v", "q")
        k.set(1)
        main_tid = threading.get_native_id()
        fds_before = len(os.listdir("/proc/self/fd"))
        assert tld.runtime_stats().live_blocks == 1
        for round in range(3):
            ts = [threading.Thread(target=k.set, args=(i,)) for i in range(16)]
            for t in ts: t.start()
            for t in ts: t.join()
            assert settle(lambda: tld.runtime_stats().live_blocks == 1), tld.runtime_stats()
            assert settle(lambda: len(os.listdir("/proc/self/fd")) == fds_before), "pidfds leaked"
            assert set(threads(dump())) == {main_tid}, "a finished thread is still registered"
        # A live thread is registered, and gone once it finishes.
        go, done = threading.Event(), threading.Event()
        def worker():
            k.set(99)
            go.set()
            done.wait()
        t = threading.Thread(target=worker)
        t.start(); go.wait()
        seen = threads(dump())
        assert len(seen) == 2 and 99 in [v["v"] for v in seen.values()], seen
        done.set(); t.join()
        assert settle(lambda: tld.runtime_stats().live_blocks == 1)
        assert set(threads(dump())) == {main_tid}
    """)


def test_fork_reregisters_the_child(run_kernel):
    run_kernel("""
        tld.attach()
        k = tld.key("v", "i")
        other = tld.key("other", 16)
        k.set(11)
        other.set(b"parent")
        address = k.address()
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(r)
                # No tld call yet: the child's thread is registered already.
                doc = dump()
                seen = threads(doc)
                assert list(seen) == [threading.get_native_id()], seen
                assert seen[threading.get_native_id()] == {"v": 11, "other": b"parent".ljust(16, b"\\0")}, seen
                # The pointer taken before the fork still works, for Python and BPF.
                ctypes.c_int.from_address(address).value = 22
                assert k.get() == 22
                assert threads(dump())[threading.get_native_id()]["v"] == 22
                # New threads of the child register too.
                t = threading.Thread(target=k.set, args=(33,))
                t.start(); t.join()
                os.write(w, b"ok")
                code = 0
            except BaseException:
                import traceback
                traceback.print_exc()
            finally:
                os._exit(code)
        os.close(w)
        _, status = os.waitpid(pid, 0)
        assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
        assert os.read(r, 2) == b"ok"
        assert k.get() == 11, "the child's writes are its own"
        assert threads(dump())[threading.get_native_id()]["v"] == 11
    """)


def test_refresh_follows_a_replaced_pin(run_kernel):
    # DESIGN §8.4 with the watcher off: refresh() moves every thread to the
    # map now pinned at the path, with no call from the thread itself.
    run_kernel("""
        import subprocess
        cli = os.environ["TLD_CLI"]
        path = f"/sys/fs/bpf/tld-pytest-refresh-{os.getpid()}/tld_data_map"
        os.environ["TLD_MAP_PATH"] = path  # what bpf_reader.dump() reads
        def pin():
            subprocess.run([cli, "pin", "--path", path], check=True, capture_output=True)
        def unpin():
            subprocess.run([cli, "unpin", "--path", path], check=True, capture_output=True)
        pin()
        try:
            tld.attach(path)
            k = tld.key("refreshed", "q")
            ready, done = threading.Event(), threading.Event()
            tid = []
            def worker():
                k.set(99)
                tid.append(threading.get_native_id())
                ready.set()
                done.wait()
            t = threading.Thread(target=worker)
            t.start()
            ready.wait()
            assert threads(dump())[tid[0]]["refreshed"] == 99
            unpin()
            pin()  # the consumer restarted with a new map
            assert tid[0] not in threads(dump()), "a new, empty map"
            tld.refresh()
            assert threads(dump())[tid[0]]["refreshed"] == 99, "moved to the new map"
            assert tld.runtime_stats().attached_maps == 1
            done.set()
            t.join()
        finally:
            unpin()
            os.rmdir(os.path.dirname(path))
    """, env={"TLD_PIN_WATCH": "0"})
