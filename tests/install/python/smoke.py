"""The Python consumer of tld, run from a fresh venv holding only the wheel.

Usage: python smoke.py KEY VALUE. Publishes VALUE under KEY on a new thread,
prints "ready TID" and keeps the thread alive until stdin reaches EOF.
"""

import sys
import threading

import tld


def main() -> int:
    name, value = sys.argv[1], int(sys.argv[2])
    tld.attach()  # $TLD_MAP_PATH
    key = tld.key(name, "Q")
    failure = []

    def worker() -> None:
        try:
            key.set(value)  # registers this thread with the attached map
            print(f"ready {threading.get_native_id()}", flush=True)
            sys.stdin.read()
        except BaseException as e:  # reported by the main thread
            failure.append(e)

    t = threading.Thread(target=worker)
    t.start()
    t.join()
    if failure:
        print(f"smoke: {failure[0]!r}", file=sys.stderr)
        return 1
    print(f"smoke: tld {tld.__version__} on Python {sys.version.split()[0]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
