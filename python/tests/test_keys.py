"""The Python API without BPF: formats, values, names, errors, threads.

Each test runs in a fresh interpreter (see conftest.py), so each starts with
a fresh tld runtime.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import tld

ROOT = Path(__file__).resolve().parents[2]

# (format as Python source, a value, the bytes struct/ctypes would store)
FORMATS = [
    ('"b"', "-128", 'struct.pack("b", -128)'),
    ('"B"', "255", 'struct.pack("B", 255)'),
    ('"h"', "-32768", 'struct.pack("h", -32768)'),
    ('"H"', "65535", 'struct.pack("H", 65535)'),
    ('"i"', "-(2**31)", 'struct.pack("i", -(2**31))'),
    ('"I"', "2**32 - 1", 'struct.pack("I", 2**32 - 1)'),
    ('"l"', "-(2**63)", 'struct.pack("l", -(2**63))'),
    ('"L"', "2**64 - 1", 'struct.pack("L", 2**64 - 1)'),
    ('"q"', "-5", 'struct.pack("q", -5)'),
    ('"Q"', "2**64 - 1", 'struct.pack("Q", 2**64 - 1)'),
    ('"n"', "-7", 'struct.pack("n", -7)'),
    ('"N"', "7", 'struct.pack("N", 7)'),
    ('"=l"', "-(2**31)", 'struct.pack("=l", -(2**31))'),
    ('"<H"', "0x1234", 'struct.pack("<H", 0x1234)'),
    ('">I"', "0x01020304", 'bytes([1, 2, 3, 4])'),
    ('"f"', "1.5", 'struct.pack("f", 1.5)'),
    ('"d"', "-2.25", 'struct.pack("d", -2.25)'),
    ('"e"', "0.5", 'struct.pack("e", 0.5)'),
    ('"?"', "True", 'b"\\x01"'),
    ('"c"', 'b"x"', 'b"x"'),
    ('"16s"', 'b"sixteen bytes!!!"', 'b"sixteen bytes!!!"'),
    ('"<IH"', "(7, 8)", 'struct.pack("<IH", 7, 8)'),
    ('"2i"', "(-1, 1)", 'struct.pack("2i", -1, 1)'),
    ("12", 'b"raw"', 'b"raw" + bytes(9)'),  # get() returns all 12 bytes: b"raw" + zeros
    ("ctypes.c_int8", "-1", 'b"\\xff"'),
    ("ctypes.c_uint16", "65535", 'b"\\xff\\xff"'),
    ("ctypes.c_int", "-2", 'struct.pack("i", -2)'),
    ("ctypes.c_long", "2**62", 'struct.pack("l", 2**62)'),
    ("ctypes.c_uint64", "2**64 - 1", 'struct.pack("Q", 2**64 - 1)'),
    ("ctypes.c_float", "0.25", 'struct.pack("f", 0.25)'),
    ("ctypes.c_double", "3.5", 'struct.pack("d", 3.5)'),
    ("ctypes.c_bool", "True", 'b"\\x01"'),
    ("ctypes.c_char", 'b"z"', 'b"z"'),
    ("ctypes.c_int.__ctype_be__", "1", 'b"\\x00\\x00\\x00\\x01"'),
    ("ctypes.c_long.__ctype_be__", "1", 'bytes(7) + b"\\x01"'),
]


@pytest.mark.parametrize("fmt,value,packed", FORMATS, ids=[f[0] for f in FORMATS])
def test_format_round_trip(run, fmt, value, packed):
    run(f"""
        k = tld.key("value", {fmt})
        assert k.get() == struct.unpack(k.format, bytes(k.size))[0] if isinstance(k.format, str) and len(struct.unpack(k.format, bytes(k.size))) == 1 else True
        assert bytes(k.view()) == bytes(k.size), "a fresh value is zero"
        k.set({value})
        expected = {value} if k.format is not None else {packed}
        assert k.get() == expected, (k.get(), expected)
        assert bytes(k.view()) == {packed}, (bytes(k.view()), {packed})
        assert k.size == len({packed})
        # Another thread has its own value, zero until it sets it.
        seen = []
        t = threading.Thread(target=lambda: seen.append(bytes(k.view())))
        t.start(); t.join()
        assert seen == [bytes(k.size)], seen
    """)


def test_ctypes_structure_and_array(run):
    run("""
        class Req(ctypes.Structure):
            _fields_ = [("id", ctypes.c_uint64), ("prio", ctypes.c_int16), ("flag", ctypes.c_bool)]
        r = tld.key("request", Req)
        assert r.size == ctypes.sizeof(Req) == 16 and r.format is Req
        r.set(Req(42, -3, True))
        got = r.get()
        assert isinstance(got, Req) and (got.id, got.prio, got.flag) == (42, -3, True)
        # In place, through ctypes:
        Req.from_address(r.address()).prio = 9
        assert r.get().prio == 9
        Req.from_buffer(r.view()).id = 7
        assert r.get().id == 7
        r.set(bytes(16))
        assert r.get().id == 0
        arr = tld.key("arr", ctypes.c_int32 * 4)
        arr.set((ctypes.c_int32 * 4)(1, 2, 3, 4))
        assert list(arr.get()) == [1, 2, 3, 4]
        assert arr.view().cast("i").tolist() == [1, 2, 3, 4]
        for bad in (Req(), bytes(15), 5):
            try:
                arr.set(bad)
            except (TypeError, ValueError) as e:
                assert "arr" in str(e), e
            else:
                raise AssertionError(f"{bad!r} accepted")
        assert list(arr.get()) == [1, 2, 3, 4]
    """)


def test_view_and_address(run):
    run("""
        k = tld.key("prio", "i")
        k.view().cast("i")[0] = -5
        assert k.get() == -5
        ctypes.c_int.from_address(k.address()).value = 12
        assert k.get() == 12
        assert k.view().readonly is False and k.view().nbytes == 4
        assert k.address() % 8 == 0
        # Each thread has its own address.
        addrs = []
        t = threading.Thread(target=lambda: addrs.append(k.address()))
        t.start(); t.join()
        assert addrs[0] != k.address()
    """)


# (format, value refused, exception)
REFUSED = [
    ('"b"', "128", "ValueError"),
    ('"b"', "-129", "ValueError"),
    ('"B"', "-1", "ValueError"),
    ('"B"', "256", "ValueError"),
    ('"h"', "2**15", "ValueError"),
    ('"H"', "2**16", "ValueError"),
    ('"i"', "2**31", "ValueError"),
    ('"i"', "-(2**31) - 1", "ValueError"),
    ('"I"', "-1", "ValueError"),
    ('"q"', "2**63", "ValueError"),
    ('"Q"', "2**64", "ValueError"),
    ('"Q"', "-1", "ValueError"),
    ('"i"', "1.0", "TypeError"),
    ('"i"', '"1"', "TypeError"),
    ('"i"', "None", "TypeError"),
    ('"d"', '"1.0"', "TypeError"),
    ('"f"', "1e39", "ValueError"),
    ('"?"', "2", "ValueError"),
    ('"?"', '"yes"', "TypeError"),
    ('"c"', 'b"ab"', "ValueError"),
    ('"c"', '"a"', "TypeError"),
    ('"4s"', 'b"12345"', "ValueError"),
    ('"4s"', '"abcd"', "TypeError"),
    ("4", 'b"12345"', "ValueError"),
    ("4", "[1, 2]", "TypeError"),
    ('"<IH"', "(1, 2**16)", "ValueError"),
    ('"<IH"', "(1,)", "ValueError"),
    ('"<IH"', "5", "TypeError"),
    ('"e"', "1e10", "ValueError"),
    ('">i"', '"1"', "TypeError"),
    ('"e"', '"x"', "TypeError"),
    ('">i"', "1.5", "TypeError"),
    ("ctypes.c_uint8", "256", "ValueError"),
    ("ctypes.c_int.__ctype_be__", "2**31", "ValueError"),
]


@pytest.mark.parametrize("fmt,value,exc", REFUSED, ids=[f"{f[0]}={f[1]}" for f in REFUSED])
def test_value_that_does_not_fit_is_refused(run, fmt, value, exc):
    run(f"""
        k = tld.key("value", {fmt})
        before = bytes(k.view())
        try:
            k.set({value})
        except {exc} as e:
            assert "value" in str(e), f"the message names the key: {{e}}"
        else:
            raise AssertionError({value!r} + " was accepted: " + repr(bytes(k.view())))
        assert bytes(k.view()) == before, "a refused value leaves the stored one alone"
    """)


def test_ints_accept_index_and_bool(run):
    run("""
        import fractions, enum
        class Level(enum.IntEnum):
            HIGH = 3
        k = tld.key("prio", "i")
        k.set(Level.HIGH); assert k.get() == 3
        k.set(True); assert k.get() == 1
        class Index:
            def __index__(self): return 7
        k.set(Index()); assert k.get() == 7
        try:
            k.set(fractions.Fraction(3, 1))
        except TypeError:
            pass
        else:
            raise AssertionError("a Fraction is not an int")
        d = tld.key("ratio", "d")
        d.set(3); assert d.get() == 3.0 and isinstance(d.get(), float)
        f = tld.key("f32", "f")
        f.set(float("inf")); assert f.get() == float("inf")
        b = tld.key("flag", "?")
        b.set(1); assert b.get() is True
        b.set(False); assert b.get() is False
        s = tld.key("s", "8s")
        s.set(bytearray(b"ab")); assert s.get() == b"ab" + bytes(6)
        s.set(memoryview(b"12345678")); assert s.get() == b"12345678"
        s.set(b""); assert s.get() == bytes(8)
    """)


NAMES = [
    ('b"name"', "TypeError", None),
    ("42", "TypeError", None),
    ("None", "TypeError", None),
    ('"a\\0b"', "TldError", "EINVAL"),
    ('""', "TldError", "EINVAL"),
    ('"x" * 62', "TldError", "ENAMETOOLONG"),
    # 31 two-byte characters: 31 characters, 62 UTF-8 bytes.
    ('"\\u00e9" * 31', "TldError", "ENAMETOOLONG"),
    ('"\\U0001f600" * 16', "TldError", "ENAMETOOLONG"),
]


@pytest.mark.parametrize("name,exc,err", NAMES, ids=[n[0] for n in NAMES])
@pytest.mark.parametrize("function", ["create_key", "key", "find_key"])
def test_bad_name(run, function, name, exc, err):
    check_errno = f"assert e.errno == errno.{err}, e.errno" if err else "assert not isinstance(e, TldError)"
    args = f"{name}" if function == "find_key" else f"{name}, 4"
    run(f"""
        try:
            tld.{function}({args})
        except {exc} as e:
            {check_errno}
            print(e)
        else:
            raise AssertionError("accepted")
        assert tld.keys() == []
    """)


def test_name_length_is_counted_in_bytes(run):
    run("""
        assert tld.MAX_NAME_BYTES == 61
        a = tld.create_key("x" * 61, 4)
        b = tld.create_key("\\u00e9" * 30 + "x", 4)   # 61 bytes
        c = tld.create_key("\\U0001f600" * 15 + "x", 4)  # 61 bytes
        assert [k.name for k in tld.keys()] == ["x" * 61, "\\u00e9" * 30 + "x", "\\U0001f600" * 15 + "x"]
        try:
            tld.create_key("\\u00e9" * 31, 4)
        except TldError as e:
            assert e.errno == errno.ENAMETOOLONG and "62 bytes" in str(e), e
        else:
            raise AssertionError("62 bytes accepted")
    """)


# (size or format as Python source, exception, errno)
BAD_FORMATS = [
    ("0", "TldError", "EINVAL"),
    ("-1", "ValueError", None),
    ("-(2**70)", "ValueError", None),
    ("2**70", "TldError", "E2BIG"),
    ("65536", "TldError", "E2BIG"),
    ("100000", "TldError", "E2BIG"),
    ("True", "TypeError", None),
    ("1.0", "TypeError", None),
    ("None", "TypeError", None),
    ('b"i"', "TypeError", None),
    ("int", "TypeError", None),
    ("bytes", "TypeError", None),
    ('""', "ValueError", None),
    ('"0s"', "ValueError", None),
    ('"4x"', "ValueError", None),
    ('"P"', "ValueError", None),
    ('"iP"', "ValueError", None),
    ('"zz"', "ValueError", None),
    ('"i!"', "ValueError", None),
    ("ctypes.c_char_p", "ValueError", None),
    ("ctypes.c_wchar_p", "ValueError", None),
    ("ctypes.c_void_p", "ValueError", None),
    ("ctypes.py_object", "ValueError", None),
    ("ctypes.c_longdouble", "ValueError", None),
    ("ctypes.c_wchar", "ValueError", None),
    ("ctypes.POINTER(ctypes.c_int)", "ValueError", None),
    ("ctypes.Structure", "ValueError", None),
    ('type("S", (ctypes.Structure,), {"_fields_": [("n", ctypes.c_int), ("p", ctypes.c_void_p)]})', "ValueError", None),
    ("ctypes.c_char_p * 2", "ValueError", None),
]


@pytest.mark.parametrize("fmt,exc,err", BAD_FORMATS, ids=[f[0] for f in BAD_FORMATS])
def test_bad_size_or_format(run, fmt, exc, err):
    check_errno = f"assert e.errno == errno.{err}, e.errno" if err else "assert not isinstance(e, TldError)"
    run(f"""
        for f in (tld.create_key, tld.key):
            try:
                f("value", {fmt})
            except {exc} as e:
                {check_errno}
                print(type(e).__name__, e)
            else:
                raise AssertionError("accepted")
        assert tld.keys() == []
    """)


def test_errors_carry_errno_and_name(run):
    run("""
        a = tld.create_key("taken", "i")
        a.set(5)  # the first access freezes the data size: 8 bytes + the 64-byte reserve
        cases = [
            (lambda: tld.create_key("taken", "i"), errno.EEXIST, '"taken" already exists'),
            (lambda: tld.key("taken", "q"), errno.EEXIST, '"taken" exists with size 4, not the requested 8'),
            (lambda: tld.find_key("taken", "q"), errno.EEXIST, '"taken" exists with size 4'),
            (lambda: tld.find_key("missing"), errno.ENOENT, '"missing"'),
            (lambda: tld.create_key("huge", 72), errno.E2BIG, '"huge" of 72 bytes does not fit'),
            (lambda: tld.create_key("zero", 0), errno.EINVAL, '"zero": invalid size 0'),
            (lambda: tld.set_dynamic_reserve(8), errno.EBUSY, "frozen"),
            (lambda: tld.attach("/nonexistent/tld_data_map"), errno.ENOENT, "/nonexistent/tld_data_map"),
        ]
        for call, err, text in cases:
            try:
                call()
            except TldError as e:
                assert isinstance(e, OSError)
                assert e.errno == err, (e.errno, err, e)
                assert text in str(e) and text in e.strerror, (text, str(e))
            else:
                raise AssertionError(text)
        assert a.get() == 5
        assert [k.name for k in tld.keys()] == ["taken"]
    """)


def test_get_or_create_and_find(run):
    run("""
        a = tld.key("shared", "i")
        b = tld.key("shared", "I")          # same size, another view of the same bytes
        c = tld.key("shared", 4)
        d = tld.find_key("shared")
        e = tld.find_key("shared", ctypes.c_int)
        assert a.offset == b.offset == c.offset == d.offset == e.offset
        assert d.format is None and e.format is ctypes.c_int
        a.set(-1)
        assert b.get() == 2**32 - 1 and c.get() == b"\\xff" * 4 and e.get() == -1
        other = tld.create_key("other", "q")
        assert other.offset == 8 and other.slot == 1
        assert [(k.name, k.size, k.offset, k.slot) for k in tld.keys()] == [("shared", 4, 0, 0), ("other", 8, 8, 1)]
        assert repr(other) == "Key(name='other', format='q', size=8, offset=8, slot=1)"
    """)


def test_enospc_when_every_slot_is_taken(run):
    run("""
        max_slots = os.sysconf("SC_PAGE_SIZE") // 64 - 1
        for i in range(max_slots):
            tld.create_key(f"k{i}", 1)
        try:
            tld.create_key("one_more", 1)
        except TldError as e:
            assert e.errno == errno.ENOSPC and f"all {max_slots} metadata slots" in str(e), e
        else:
            raise AssertionError("ENOSPC expected")
        assert len(tld.keys()) == max_slots
        assert tld.key("k0", 1).offset == 0  # existing keys are still found
    """)


def test_attach_arguments(run):
    run("""
        import tempfile
        try:
            tld.attach("/x", fd=3)
        except TypeError:
            pass
        else:
            raise AssertionError("path and fd")
        try:
            tld.attach(fd=-1)
        except ValueError:
            pass
        else:
            raise AssertionError("fd -1")
        with tempfile.NamedTemporaryFile() as f:
            for call in (lambda: tld.attach(f.name), lambda: tld.attach(fd=f.fileno())):
                try:
                    call()
                except TldError as e:
                    assert e.errno == errno.EINVAL, e
                    print(e)
                else:
                    raise AssertionError("a regular file attached")
        os.environ["TLD_MAP_PATH"] = "/nonexistent/pin"
        assert tld.default_map_path() == "/nonexistent/pin"
        try:
            tld.attach()
        except TldError as e:
            assert e.errno == errno.ENOENT and "/nonexistent/pin" in str(e)
        else:
            raise AssertionError("attached nothing")
        assert tld.runtime_stats().attached_maps == 0
    """)


def test_default_map_path(run):
    run("""
        assert tld.default_map_path() == "/sys/fs/bpf/tld/tld_data_map", tld.default_map_path()
    """)


def test_threads_have_their_own_values(run):
    run("""
        k = tld.key("prio", "q")
        results = {}
        barrier = threading.Barrier(8)
        def worker(i):
            k.set(i * 1000)
            barrier.wait()
            results[i] = k.get()
        ts = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
        for t in ts: t.start()
        for t in ts: t.join()
        assert results == {i: i * 1000 for i in range(8)}, results
        assert k.get() == 0
        assert settle(lambda: tld.runtime_stats().live_blocks == 1), "the main thread's block only (get() made it)"
    """)


def test_runtime_stats_and_reserve(run):
    run("""
        s = tld.runtime_stats()
        assert (s.live_blocks, s.attached_maps, s.data_size, s.frozen) == (0, 0, 64, False), s
        assert s.page_size == os.sysconf("SC_PAGE_SIZE") and s.meta_page % s.page_size == 0
        tld.set_dynamic_reserve(128)
        assert tld.runtime_stats().data_size == 128
        tld.create_key("before_first_access", 16)   # laid out in every block
        assert tld.runtime_stats().data_size == 16 + 128
        tld.key("before_first_access", 16).set(b"x")
        s = tld.runtime_stats()
        assert s.frozen and s.live_blocks == 1 and s.data_size == 144, s
        try:
            tld.set_dynamic_reserve(-1)
        except ValueError:
            pass
        else:
            raise AssertionError("negative reserve")
        assert tld.DEFAULT_DYNAMIC_RESERVE == 64
        assert "RuntimeStats(" in repr(s)
    """)


def test_concurrent_first_accesses(run):
    # A first access allocates the thread's block (with the GIL released
    # around the system calls): many threads doing theirs at once.
    run("""
        k = tld.key("v", "i")
        start = threading.Barrier(32)
        def worker(i):
            start.wait()
            k.set(i)
            assert k.get() == i
        ts = [threading.Thread(target=worker, args=(i,)) for i in range(32)]
        for t in ts: t.start()
        for t in ts: t.join()
        assert settle(lambda: tld.runtime_stats().live_blocks == 0)
    """)


def test_shares_the_runtime_with_the_c_library(run):
    # DESIGN §4: every copy of the core in a process shares one runtime. Here
    # the extension module and libtld.so loaded with ctypes (RTLD_LOCAL).
    lib = ROOT / "target" / "debug" / "libtld.so"
    if not lib.exists():
        pytest.skip(f"{lib} is missing: cargo build -p task-local-data-capi (make test builds it)")
    run(f"""
        class CKey(ctypes.Structure):
            _fields_ = [("off", ctypes.c_int16)]
        c = ctypes.CDLL({str(lib)!r})
        c.tld_key.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        c.tld_key.restype = CKey
        c.tld_create_key.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
        c.tld_create_key.restype = CKey
        c.tld_data.argtypes = [CKey]
        c.tld_data.restype = ctypes.c_void_p
        py_key = tld.create_key("from_python", "q")
        c_key = c.tld_create_key(b"from_c", 4)
        assert c_key.off == 8, c_key.off
        assert c.tld_key(b"from_python", 8).off == py_key.offset == 0
        assert c.tld_create_key(b"from_python", 8).off == -errno.EEXIST
        found = tld.find_key("from_c", "i")
        assert found.offset == 8 and found.size == 4
        py_key.set(-42)
        assert c.tld_data(c.tld_key(b"from_python", 8)) == py_key.address()
        assert ctypes.c_int64.from_address(c.tld_data(c.tld_key(b"from_python", 8))).value == -42
        ctypes.c_int32.from_address(c.tld_data(c_key)).value = 7
        assert found.get() == 7
        assert tld.runtime_stats().live_blocks == 1
    """)


def test_version():
    cargo = (ROOT / "Cargo.toml").read_text()
    version = re.search(r'^version = "([^"]+)"', cargo, re.M).group(1)
    assert tld.__version__ == version
    assert set(tld.__all__) <= set(dir(tld))
    assert issubclass(tld.TldError, OSError)


def test_stubs_match_the_module():
    pytest.importorskip("mypy")
    # From target/: mypy leaves a .mypy_cache in its working directory.
    out = subprocess.run([sys.executable, "-m", "mypy.stubtest", "tld"], capture_output=True, text=True, cwd=ROOT / "target")
    assert out.returncode == 0, out.stdout + out.stderr
