"""`Key.scoped` and `tld.scoped`: values for the duration of a block, the
previous ones restored after it; `view()` after its thread exits.

Each scenario runs in a fresh interpreter (conftest.py). The kernel tests
read the values back through BPF (`tld dump`), as test_kernel.py does.
"""

from __future__ import annotations


def test_scoped_restores_on_exit_and_on_exceptions(run):
    run("""
        prio = tld.key("priority", "i")
        req = tld.key("request_id", "Q")
        name = tld.key("name", "8s")
        prio.set(1)
        with prio.scoped(3) as scope:
            assert prio.get() == 3
            assert isinstance(scope, tld.Scope)
            with prio.scoped(4):                      # nested
                assert prio.get() == 4
            assert prio.get() == 3
        assert prio.get() == 1
        try:
            with prio.scoped(5):
                assert prio.get() == 5
                raise KeyError("request failed")
        except KeyError:
            pass
        else:
            raise AssertionError("the scope swallowed the exception")
        assert prio.get() == 1
        # Several keys at once; bytes restore exactly (formats with padding too).
        name.set(b"before")
        with tld.scoped({prio: 7, req: 2**64 - 1, name: b"during"}):
            assert (prio.get(), req.get(), name.get()) == (7, 2**64 - 1, b"during\\0\\0")
        assert (prio.get(), req.get(), name.get()) == (1, 0, b"before\\0\\0")
        # The same scope object, entered again (and recursively).
        s = prio.scoped(8)
        with s:
            with s:
                assert prio.get() == 8
            assert prio.get() == 8
        assert prio.get() == 1
        # Two key objects for one key: the value before the first comes back.
        again = tld.key("priority", "i")
        with tld.scoped({prio: 9, again: 10}):
            assert prio.get() == 10
        assert prio.get() == 1
        assert repr(prio.scoped(2)) == "tld.scoped({priority: 2})", repr(prio.scoped(2))
    """)


def test_scoped_entry_is_all_or_nothing(run):
    run("""
        prio = tld.key("priority", "i")
        req = tld.key("request_id", "Q")
        prio.set(1); req.set(2)
        for bad in ({prio: 5, req: -1}, {prio: 5, req: "x"}):
            try:
                with tld.scoped(bad):
                    raise AssertionError("entered with a value that does not fit")
            except (ValueError, TypeError) as e:
                assert "request_id" in str(e), e
            assert (prio.get(), req.get()) == (1, 2), (prio.get(), req.get())
        try:
            prio.scoped(2**40).__enter__()
        except ValueError:
            pass
        assert prio.get() == 1
        for bad, why in ((["priority"], "dict"), ({"priority": 1}, "tld.Key")):
            try:
                tld.scoped(bad)
            except TypeError as e:
                assert why in str(e), e
            else:
                raise AssertionError(f"{bad!r} accepted")
    """)


def test_scoped_is_per_thread(run):
    run("""
        prio = tld.key("priority", "i")
        prio.set(1)
        seen = {}
        def worker():
            seen["before"] = prio.get()
            with prio.scoped(6):
                seen["inside"] = prio.get()
            seen["after"] = prio.get()
        with prio.scoped(3):
            t = threading.Thread(target=worker); t.start(); t.join()
            assert prio.get() == 3
        assert seen == {"before": 0, "inside": 6, "after": 0}, seen
        # Exiting on another thread would restore that thread's value with
        # this one's: refused, nothing written.
        s = prio.scoped(4)
        s.__enter__()
        errors = []
        def exit_elsewhere():
            prio.set(11)
            try:
                s.__exit__(None, None, None)
            except RuntimeError as e:
                errors.append(str(e))
            errors.append(prio.get())
        t = threading.Thread(target=exit_elsewhere); t.start(); t.join()
        assert "another thread" in errors[0] and errors[1] == 11, errors
        assert prio.get() == 4
    """)


def test_view_after_its_thread_exits(run):
    run("""
        k = tld.key("prio", "i")
        k.set(1)
        views = {}
        def worker():
            v = k.view()
            v[0] = 7
            views["v"] = v
            views["addr"] = k.address()
        t = threading.Thread(target=worker); t.start(); t.join()
        v = views["v"]
        # Released by the binding when the thread ended: no read or write
        # reaches the block, which the pool hands to the next thread.
        for use in (lambda: v[0], lambda: v.__setitem__(0, 9), lambda: v.cast("i"), lambda: bytes(v)):
            try:
                use()
            except ValueError as e:
                assert "released" in str(e), e
            else:
                raise AssertionError("a view of an exited thread's value was usable")
        # The next thread gets zeroed values, whatever block it is given.
        got = []
        t = threading.Thread(target=lambda: got.append((k.get(), k.address())))
        t.start(); t.join()
        assert got[0][0] == 0, got
        assert k.get() == 1
        # A view of a live thread stays usable; many views do not grow without bound.
        for _ in range(1000):
            k.view()
        k.view()[0] = 2
        assert k.get() == 2
    """)


def test_scoped_seen_by_bpf(run_kernel):
    run_kernel("""
        tld.attach()
        prio = tld.key("priority", "i")
        req = tld.key("request_id", "Q")
        tid = threading.get_native_id()
        prio.set(1)
        with tld.scoped({prio: 3, req: 42}):
            inside = threads(dump())[tid]
        after = threads(dump())[tid]
        assert inside == {"priority": 3, "request_id": 42}, inside
        assert after == {"priority": 1, "request_id": 0}, after
    """)


def test_asyncio_tasks_share_their_thread(run_kernel):
    # What the README warns about: values are per OS thread, so a value set
    # across an `await` is what BPF sees for every task that runs on the
    # thread meanwhile; scoping synchronous sections keeps each task's own.
    run_kernel("""
        import asyncio
        tld.attach()
        req = tld.key("request_id", "Q")
        tid = threading.get_native_id()
        seen = {}

        async def across_await(n, gate):
            with req.scoped(n):
                await gate.wait()          # another task runs on this thread now

        async def other(gate):
            seen["other"] = threads(dump())[tid]["request_id"]
            gate.set()

        async def synchronous_sections(n):
            with req.scoped(n):
                seen[n] = threads(dump())[tid]["request_id"]
            await asyncio.sleep(0)
            seen[f"{n} after"] = threads(dump())[tid]["request_id"]

        async def main():
            gate = asyncio.Event()
            await asyncio.gather(across_await(41, gate), other(gate))
            await asyncio.gather(synchronous_sections(1), synchronous_sections(2))

        asyncio.run(main())
        assert seen["other"] == 41, seen     # the leak the README describes
        assert seen[1] == 1 and seen[2] == 2, seen
        assert seen["1 after"] == 0 and seen["2 after"] == 0, seen
        assert threads(dump())[tid]["request_id"] == 0
    """)
