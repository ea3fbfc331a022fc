"""What `tld dump --json` must show of a mixed-language process.

A scenario process (mixed_app.py, or the Go host gohost) prints one JSON line,
its expectation:

    {"pid": P,
     "meta_pages": {"py": A, "cxx": A, "go": A},   # each copy's runtime_stats().meta_page
     "keys": {"mixed.common": 8, ...},             # every key of the process, name -> size
     "threads": {"TID": {"key": value, ...}, ...}} # every registered thread, what it wrote

and keeps its threads alive until its stdin is closed. check() dumps it with
the `tld` tool (bpf_reader.dump: a BPF task iterator reading the pages through
the map's UPTRs) and asserts the properties of DESIGN §4 as BPF sees them.
"""

from __future__ import annotations

from typing import Any

from bpf_reader import dump, threads


def check(expect: dict[str, Any]) -> dict[str, Any]:
    # One runtime: every copy of the core reports the same metadata page.
    pages = expect["meta_pages"]
    assert len(set(pages.values())) == 1 and 0 not in pages.values(), f"copies disagree on the metadata page: {pages}"

    doc = dump(expect["pid"])
    assert doc["warnings"] == [], doc["warnings"]

    # Every key exactly once, in one layout: one metadata page as BPF walks it.
    names = [k["name"] for k in doc["keys"]]
    assert sorted(names) == sorted(expect["keys"]), f"keys {names}, expected {sorted(expect['keys'])}"
    slots = [k["slot"] for k in doc["keys"]]
    assert len(set(slots)) == len(slots), doc["keys"]
    spans = sorted((k["offset"], k["offset"] + k["size"]) for k in doc["keys"])
    for (_, end), (start, _) in zip(spans, spans[1:]):
        assert end <= start, f"overlapping values: {doc['keys']}"
    for k in doc["keys"]:
        assert k["size"] == expect["keys"][k["name"]], k

    # Every thread: registered, walked through every key, its values as written.
    seen = threads(doc)
    want = {int(tid): values for tid, values in expect["threads"].items()}
    assert set(seen) == set(want), f"registered threads {sorted(seen)}, expected {sorted(want)}"
    for tid, values in want.items():
        assert set(seen[tid]) == set(expect["keys"]), f"thread {tid}: walk reached {sorted(seen[tid])}"
        for name, value in values.items():
            assert seen[tid][name] == value, f"thread {tid}: {name} = {seen[tid][name]}, expected {value}"
    return doc
