/**
 * The workloads of `bench:migrate`: small Python programs started on host A with
 * `Host.startWorkload`, each holding its data file open and printing one progress line
 * `<epoch ms> <bytes processed>` at most every 100 ms on its stdout (a file in DATA_DIR, so
 * the progress file migrates with the process like any other open file).
 *
 *   read    the paper's read example: reads its file line by line, paced (READ_RATE),
 *           starting over at the end;
 *   write   the paper's write example: appends fixed-size lines to a log that already holds
 *           the data (WRITE_RATE), one write(2) per line;
 *   sparse  a random reader of 1% of the data: block-aligned 256 KiB preads of a fixed,
 *           seeded set of offsets, one read every 100 ms, the set read again and again;
 *   seq     a full sequential reader: 1 MiB reads from start to end, unthrottled up to
 *           SEQ_CAP, starting over at the end.
 *
 * Data is text (base64 lines of 76 characters) from a seeded AES-CTR stream, so the same
 * bytes can be made on either host without crossing the link, and SSH cannot compress it.
 */
import type { Host } from "../../src/hosts/index.js";

export const WORKLOADS = ["read", "write", "sparse", "seq"] as const;
export type WorkloadName = (typeof WORKLOADS)[number];

export const WORKLOAD_TITLES: Record<WorkloadName, string> = {
  read: "paper's read example (line reader, 2 MiB/s)",
  write: "paper's write example (appender, 512 KiB/s)",
  sparse: "sparse random reader (1% of the data, 256 KiB reads)",
  seq: "full sequential reader (1 MiB reads, up to 256 MiB/s)",
};

/** Bytes per second the read example consumes. */
export const READ_RATE = 2 * 1024 * 1024;
/** Bytes per second the write example appends, in lines of WRITE_LINE bytes. */
export const WRITE_RATE = 512 * 1024;
export const WRITE_LINE = 512;
/** Sparse reader: piece size (the LazyFS block size), fraction of the file, read interval. */
export const SPARSE_PIECE = 256 * 1024;
export const SPARSE_FRACTION = 0.01;
export const SPARSE_INTERVAL_S = 0.1;
/** Cap of the sequential reader, so that it does not spin a core once its data is local. */
export const SEQ_CAP = 256 * 1024 * 1024;

/** Paced loop shared by the scripts: `pace(n)` sleeps so that n bytes take n/rate seconds. */
const PACE = `
import os, sys, time
t0 = time.time()
last = 0.0
def pace(n, rate):
    global t0, last
    now = time.time()
    due = t0 + n / rate
    if due - now > 0.005:
        time.sleep(due - now)
        now = time.time()
    elif now - due > 0.2:
        t0 += now - due - 0.2   # after a stall (a freeze, a long fetch) no catch-up burst
    if now - last >= 0.1:
        print(int(now * 1000), n, flush=True)
        last = now
`;

const READ = `${PACE}
path, rate = sys.argv[1], float(sys.argv[2])
n = 0
f = open(path, "rb")
while True:
    line = f.readline()
    if not line:
        f.seek(0)
        continue
    n += len(line)
    pace(n, rate)
`;

const WRITE = `${PACE}
path, rate, width = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
fd = os.open(path, os.O_WRONLY | os.O_APPEND)
n = 0
i = 0
while True:
    line = (b"appended %012d " % i).ljust(width - 1, b".") + b"\\n"
    os.write(fd, line)
    n += len(line)
    i += 1
    pace(n, rate)
`;

const SPARSE = `${PACE}
import random
path, size, piece, frac, interval = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
count = max(1, round(size * frac / piece))
offs = [o * piece for o in random.Random(7).sample(range(size // piece), count)]
fd = os.open(path, os.O_RDONLY)
n = 0
while True:
    for o in offs:
        n += len(os.pread(fd, piece, o))
        time.sleep(interval)
        pace(n, 1e12)
`;

const SEQ = `${PACE}
path, cap = sys.argv[1], float(sys.argv[2])
f = open(path, "rb", buffering=0)
n = 0
while True:
    b = f.read(1 << 20)
    if not b:
        f.seek(0)
        continue
    n += len(b)
    pace(n, cap)
`;

/** Pieces the sparse reader reads (its distinct bytes = pieces x SPARSE_PIECE). */
export function sparsePieces(size: number): number {
  return Math.max(1, Math.round((size * SPARSE_FRACTION) / SPARSE_PIECE));
}

export interface WorkloadFiles {
  dir: string;
  /** The data file (the log for `write`). */
  data: string;
  /** The workload's stdout: its progress lines. */
  progress: string;
  /** Files the process writes (copied after the dump by the stock-CRIU systems). */
  written: string[];
}

export function workloadFiles(dataDir: string, w: WorkloadName): WorkloadFiles {
  const dir = `${dataDir}/${w}`;
  const data = `${dir}/${w === "write" ? "log.txt" : "data.txt"}`;
  const progress = `${dir}/progress.log`;
  return { dir, data, progress, written: w === "write" ? [data, progress] : [progress] };
}

/** Makes `size` bytes of the seeded text data at `path` inside `host` (same bytes anywhere). */
export async function makeData(host: Host, path: string, size: number): Promise<void> {
  const dir = path.slice(0, path.lastIndexOf("/"));
  await host.exec(
    "sh",
    [
      "-c",
      'mkdir -p "$1" && openssl enc -aes-128-ctr -nosalt -K 6c617a7966732d62656e63682d303031 -iv 00000000000000000000000000000000 -in /dev/zero 2>/dev/null | base64 -w 76 | head -c "$3" > "$2"',
      "sh",
      dir,
      path,
      String(size),
    ],
    { timeoutMs: 0 },
  );
}

/** argv (after python3) of workload `w` on `files`. */
export function workloadArgv(w: WorkloadName, files: WorkloadFiles, size: number): string[] {
  switch (w) {
    case "read":
      return ["-c", READ, files.data, String(READ_RATE)];
    case "write":
      return ["-c", WRITE, files.data, String(WRITE_RATE), String(WRITE_LINE)];
    case "sparse":
      return [
        "-c",
        SPARSE,
        files.data,
        String(size),
        String(SPARSE_PIECE),
        String(SPARSE_FRACTION),
        String(SPARSE_INTERVAL_S),
      ];
    case "seq":
      return ["-c", SEQ, files.data, String(SEQ_CAP)];
  }
}

export interface ProgressPoint {
  /** Epoch ms. */
  t: number;
  /** Bytes processed (read, appended) since the workload started. */
  bytes: number;
}

export function parseProgress(text: string): ProgressPoint[] {
  const out: ProgressPoint[] = [];
  for (const line of text.split("\n")) {
    const m = /^(\d+) (\d+)$/.exec(line.trim());
    if (m) out.push({ t: Number(m[1]), bytes: Number(m[2]) });
  }
  return out;
}
