/**
 * What the integrity and outage tests share: a reader process driven by SIGUSR1 that reports
 * every read (its bytes' sha256, or the errno it got), files of known random content on the
 * origin, and cutting the origin off (nft rules inside host a's network namespace).
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { existsSync } from "node:fs";
import { DATA_DIR, type Host, type HostPair } from "../../src/hosts/index.js";
import { linesIn, waitFor } from "./helpers.js";

export const MiB = 1024 * 1024;

export const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

/**
 * `python3 -u -c READER STAGES FILE...`: opens the files, prints `ready`, and on each SIGUSR1
 * runs the next stage of STAGES (JSON: [[fileIndex, offset, length], ...] per stage), printing
 * one JSON line per read ({sha, len} or {errno, secs}) and `{"stage": n, "done": true}`.
 */
export const READER = `
import os, sys, json, signal, time, hashlib
stages = json.loads(sys.argv[1])
fds = [os.open(p, os.O_RDONLY) for p in sys.argv[2:]]
go = [0]
signal.signal(signal.SIGUSR1, lambda *a: go.__setitem__(0, go[0] + 1))
print("ready", flush=True)
done = 0
while True:
    if go[0] > done:
        for f, off, ln in stages[done]:
            t = time.monotonic()
            try:
                b = os.pread(fds[f], ln, off)
                r = {"len": len(b), "sha": hashlib.sha256(b).hexdigest()}
            except OSError as e:
                r = {"errno": e.errno, "secs": round(time.monotonic() - t, 3)}
            r.update({"stage": done, "file": f, "offset": off})
            print(json.dumps(r), flush=True)
        print(json.dumps({"stage": done, "done": True}), flush=True)
        done += 1
    time.sleep(0.01)
`;

export interface ReadResult {
  stage: number;
  file: number;
  offset: number;
  len?: number;
  sha?: string;
  errno?: number;
  secs?: number;
  done?: boolean;
}

/** Random content written to `path` on host a. */
export async function originFile(a: Host, path: string, size: number): Promise<Buffer> {
  const data = randomBytes(size);
  await a.writeFile(path, data);
  return data;
}

/** Overwrites `data.length` bytes of `path` at `offset` on host a, in place (same inode). */
export async function overwrite(a: Host, path: string, offset: number, data: Buffer) {
  await a.exec(
    "python3",
    [
      "-c",
      "import os,sys\nfd=os.open(sys.argv[1],os.O_WRONLY)\nos.pwrite(fd,sys.stdin.buffer.read(),int(sys.argv[2]))\nos.close(fd)",
      path,
      String(offset),
    ],
    { input: data },
  );
}

/** The reader's results so far, from its output file on `host`. */
export async function results(host: Host, out: string): Promise<ReadResult[]> {
  return (await linesIn(host, out))
    .filter((l) => l.startsWith("{"))
    .map((l) => JSON.parse(l) as ReadResult);
}

/** Waits until the reader has finished stage `n`; returns that stage's reads. */
export async function stageDone(
  host: Host,
  out: string,
  n: number,
  ms = 120_000,
): Promise<ReadResult[]> {
  return waitFor(
    `stage ${n} of the reader`,
    async () => {
      const r = await results(host, out);
      return r.some((x) => x.stage === n && x.done)
        ? r.filter((x) => x.stage === n && !x.done)
        : undefined;
    },
    ms,
  );
}

/** The stage reads covering `size` bytes of file `file` in `chunk`-byte pieces. */
export function chunks(file: number, size: number, chunk: number): [number, number, number][] {
  const out: [number, number, number][] = [];
  for (let off = 0; off < size; off += chunk) out.push([file, off, Math.min(chunk, size - off)]);
  return out;
}

const NFT = existsSync("/usr/sbin/nft") ? "/usr/sbin/nft" : "/opt/lazyfs/criu/bin/nft";

/**
 * Drops packets inside host a's network namespace: everything to and from host b (`cut`), or
 * only its sshd's port `port` (`port`). Returns the function that lifts the block.
 */
export async function blockOrigin(
  pair: HostPair,
  what: { cut: true } | { port: number },
): Promise<() => Promise<void>> {
  const table = `lazyfs_test_${process.pid}_${Math.floor(Math.random() * 1e6)}`;
  const match =
    "cut" in what
      ? { out: `ip daddr ${pair.b.address}`, in: `ip saddr ${pair.b.address}` }
      : { out: `tcp sport ${what.port}`, in: `tcp dport ${what.port}` };
  const script = `add table inet ${table}
add chain inet ${table} out { type filter hook output priority 0 ; }
add chain inet ${table} in { type filter hook input priority 0 ; }
add rule inet ${table} out ${match.out} drop
add rule inet ${table} in ${match.in} drop
`;
  await pair.a.exec(NFT, ["-f", "-"], { input: script });
  return async () => {
    await pair.a.exec(NFT, ["delete", "table", "inet", table], { allowFailure: true });
  };
}

export interface ReaderOnA {
  dir: string;
  /** The files the reader holds open, and their content. */
  files: string[];
  data: Buffer[];
  /** Its output (stdout) as the origin sees it. */
  out: string;
  pid: number;
}

/**
 * Starts READER on host a in `DATA_DIR/name` (or `dir`) over new files of random content
 * (`sizes`), once it says `ready`.
 */
export async function readerOnA(
  pair: HostPair,
  where: { name: string } | { dir: string },
  files: { name: string; size: number }[],
  stages: [number, number, number][][],
): Promise<ReaderOnA> {
  const dir = "dir" in where ? where.dir : `${DATA_DIR}/${where.name}`;
  await pair.a.exec("mkdir", ["-p", dir]);
  const paths = files.map((f) => `${dir}/${f.name}`);
  const data: Buffer[] = [];
  for (const [i, f] of files.entries()) data.push(await originFile(pair.a, paths[i]!, f.size));
  const out = `${dir}/out.txt`;
  const wl = await pair.a.startWorkload(
    "python3",
    ["-u", "-c", READER, JSON.stringify(stages), ...paths],
    { stdout: out },
  );
  await waitFor("the reader on A", async () =>
    (await linesIn(pair.a, out)).includes("ready") ? true : undefined,
  );
  return { dir, files: paths, data, out, pid: wl.pid };
}

/** Tells the reader, restored on host b, to run its next stage. */
export const goReader = (pair: HostPair, pid: number) =>
  pair.b.exec("kill", ["-USR1", String(pid)]);

/** Every read got `data`'s bytes of its range (no error). */
export function assertExact(reads: ReadResult[], data: Buffer, what = ""): void {
  assert.ok(reads.length > 0, `no reads ${what}`);
  for (const r of reads) {
    assert.equal(r.errno, undefined, `read @${r.offset} ${what}: errno ${r.errno}`);
    assert.equal(
      r.sha,
      sha256(data.subarray(r.offset, r.offset + r.len!)),
      `bytes @${r.offset} ${what}`,
    );
  }
}
