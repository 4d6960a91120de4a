# A process with a dirty heap of N MiB that checks its own contents: every second it hashes
# the heap again and prints whether it still matches the hash taken at start.
import hashlib
import os
import sys
import time

heap = bytearray(os.urandom(1 << 20)) * int(sys.argv[1])
want = hashlib.sha256(heap).hexdigest()
print("start", want, flush=True)
tick = 0
while True:
    time.sleep(1)
    tick += 1
    print("tick", tick, "heap-ok" if hashlib.sha256(heap).hexdigest() == want else "HEAP-BAD", flush=True)
