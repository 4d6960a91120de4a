/**
 * Fetch benchmark: a 1 GiB file behind a real sshd on loopback.
 *  1. `scp` of the whole file (OpenSSH, SFTP protocol) vs our engine fetching it whole
 *     (prefetch), interleaved, best of ROUNDS each (BENCH_ROUNDS, default 5), connection
 *     set-up included on both sides; both copies verified by sha256. scp runs twice a round:
 *     with OpenSSH's default cipher (the target) and with the cipher our engine negotiates.
 *     The source file is read through before every copy, so that no copy pays for a page
 *     cache the host evicted in between (this VM pages out idle memory).
 *  2. First reads: the latency of the first read of each of 40 small files, one after another
 *     (each waits for its file's exact identity check on the origin).
 *  3. A sparse reader: random 64 KiB-aligned 64 KiB reads (a database-like page pattern)
 *     touching 1% of the file; bytes read vs fetched with the default settings (target:
 *     fetched <= 1.2 x read); then the same reads with the old default, 256 KiB blocks
 *     (--block-size 256K).
 * Prints a table; the last line is JSON: { full_fetch_MBps: { lazyfs, scp, scp_same_cipher },
 * ratio, ratio_same_cipher, sparse: {...}, first_read_ms: { median, max }, sparse_256k_blocks }.
 * MB = 10^6 bytes. Size override: LAZYFS_BENCH_MB (default 1024 MiB).
 */
import { execFile } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { createReadStream } from "node:fs";
import { mkdir, mkdtemp, open, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { Engine } from "../src/fetch/index.js";
import { startSshd } from "../src/hosts/sshd.js";
import { CIPHERS } from "../src/origin/sftp/connection.js";
import { metaOf, rng, sftpOriginFor } from "../test/engine/helpers.js";

const run = promisify(execFile);
const SIZE = Number(process.env.LAZYFS_BENCH_MB ?? 1024) * 1024 * 1024;
const OLD_BLOCK = 256 * 1024;
/** The cipher ssh2 negotiates with OpenSSH's sshd (the first of the origin's preferences). */
const ENGINE_CIPHER = CIPHERS[0];
const FIRST_READ_FILES = 40;
const ROUNDS = Math.max(1, Number(process.env.BENCH_ROUNDS ?? 5));
const fmt = (runs: number[]) => runs.map((ms) => `${Math.round(ms)} ms`).join(", ");

async function makeFile(path: string, size: number) {
  const fh = await open(path, "w");
  const chunk = 16 * 1024 * 1024;
  for (let off = 0; off < size; off += chunk) {
    const buf = randomBytes(Math.min(chunk, size - off));
    await fh.write(buf, 0, buf.length, off);
  }
  await fh.close();
}

function hashFile(path: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const h = createHash("sha256");
    createReadStream(path, { highWaterMark: 4 << 20 })
      .on("data", (d) => h.update(d))
      .on("end", () => resolve(h.digest("hex")))
      .on("error", reject);
  });
}

async function hashEngine(engine: Engine, id: string, size: number): Promise<string> {
  const h = createHash("sha256");
  for (let off = 0; off < size; off += 8 << 20) h.update(await engine.read(id, off, 8 << 20));
  return h.digest("hex");
}

const mbps = (bytes: number, ms: number) => Math.round((bytes / 1e6 / (ms / 1000)) * 10) / 10;

async function main() {
  const dir = await mkdtemp(join(tmpdir(), "lazyfs-bench-fetch-"));
  const sshd = await startSshd();
  try {
    const src = join(dir, "origin.bin");
    await makeFile(src, SIZE);
    const srcHash = await hashFile(src);
    const meta = await metaOf("big", src);
    const origin = () => sftpOriginFor(sshd);

    // scp: a fresh ssh connection per copy, timed from process start to exit.
    // `cipher` unset: OpenSSH's default choice (chacha20-poly1305 here); set: the cipher our
    // engine negotiates, so that the two sides pay the same encryption.
    const scpOnce = async (cipher?: string): Promise<number> => {
      const dest = join(dir, "scp.bin");
      const t0 = performance.now();
      await run("scp", [
        "-q",
        ...(cipher ? ["-c", cipher] : []),
        "-i",
        sshd.identityFile,
        "-o",
        `UserKnownHostsFile=${sshd.knownHostsFile}`,
        "-o",
        "BatchMode=yes",
        "-P",
        String(sshd.port),
        `${sshd.user}@${sshd.host}:${src}`,
        dest,
      ]);
      const ms = performance.now() - t0;
      if ((await hashFile(dest)) !== srcHash) throw new Error("scp copy differs from the source");
      await rm(dest);
      return ms;
    };
    // engine: connection set-up included, then the whole file fetched by prefetch.
    let requests = 0;
    const engineOnce = async (): Promise<number> => {
      const cacheDir = join(dir, "cache-full");
      const t0 = performance.now();
      const o = origin();
      await o.connect();
      const e = await Engine.open({ cacheDir, origin: o });
      await e.addFile(meta);
      e.startPrefetch();
      await e.whenIndependent();
      const ms = performance.now() - t0;
      requests = e.status().total.requests;
      if ((await hashEngine(e, "big", SIZE)) !== srcHash) {
        throw new Error("engine copy differs from the source");
      }
      await e.close();
      await o.close();
      await rm(cacheDir, { recursive: true });
      return ms;
    };
    // Interleaved rounds so that neither side always runs on a colder or busier machine.
    const scpRuns: number[] = [];
    const scpSameCipherRuns: number[] = [];
    const engineRuns: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      await hashFile(src);
      scpRuns.push(await scpOnce());
      await hashFile(src);
      engineRuns.push(await engineOnce());
      await hashFile(src);
      scpSameCipherRuns.push(await scpOnce(ENGINE_CIPHER));
    }
    const scpMs = Math.min(...scpRuns);
    const scpSameCipherMs = Math.min(...scpSameCipherRuns);
    const engineMs = Math.min(...engineRuns);

    // sparse reader: random 64 KiB reads until 1% of the file was read, with the default
    // settings and with the old default of 256 KiB blocks, the same reads both times.
    const readLen = 64 * 1024;
    const sparseRun = async (blockSize?: number) => {
      const o2 = origin();
      const e2 = await Engine.open({
        cacheDir: join(dir, `cache-sparse-${blockSize ?? "default"}`),
        origin: o2,
        ...(blockSize ? { blockSize } : {}),
      });
      const storeBlock = (
        JSON.parse(
          await readFile(join(dir, `cache-sparse-${blockSize ?? "default"}`, "store.json"), "utf8"),
        ) as { blockSize: number }
      ).blockSize;
      await e2.addFile(meta);
      const rand = rng(42);
      let bytesRead = 0;
      let reads = 0;
      const verify = await open(src, "r");
      const want = Buffer.alloc(readLen);
      const t0 = performance.now();
      while (bytesRead < SIZE / 100) {
        const off = Math.floor((rand() * (SIZE - readLen)) / readLen) * readLen;
        const got = await e2.read("big", off, readLen);
        await verify.read(want, 0, readLen, off);
        if (!got.equals(want)) throw new Error(`sparse read differs at @${off}`);
        bytesRead += got.length;
        reads++;
      }
      const ms = performance.now() - t0;
      await verify.close();
      const { bytesFetched, requests: originReads } = e2.status().total;
      await e2.close();
      await o2.close();
      return { blockSize: storeBlock, ms, bytesRead, reads, bytesFetched, originReads };
    };
    // First reads: one 4 KiB read of each of FIRST_READ_FILES files never read before, one
    // after another, on a connection already up. Each is a file's first origin read, which
    // waits for the exact identity check of the file (inode, ctime, ns mtime by `stat`).
    const firstReads = async () => {
      const small = join(dir, "small");
      await mkdir(small);
      const o3 = origin();
      await o3.connect();
      const e3 = await Engine.open({ cacheDir: join(dir, "cache-first"), origin: o3 });
      for (let i = 0; i < FIRST_READ_FILES; i++) {
        const path = join(small, `f${i}`);
        await writeFile(path, randomBytes(64 * 1024));
        await e3.addFile(await metaOf(`f${i}`, path));
      }
      const ms: number[] = [];
      for (let i = 0; i < FIRST_READ_FILES; i++) {
        const t0 = performance.now();
        await e3.read(`f${i}`, 0, 4096);
        ms.push(performance.now() - t0);
      }
      await e3.close();
      await o3.close();
      ms.sort((a, b) => a - b);
      const r1 = (x: number) => Math.round(x * 10) / 10;
      return { median: r1(ms[ms.length >> 1]!), max: r1(ms[ms.length - 1]!) };
    };
    const first = await firstReads();
    const sparse = await sparseRun();
    const sparseOld = await sparseRun(OLD_BLOCK);
    const { bytesRead, reads } = sparse;
    const ratio = (r: { bytesFetched: number; bytesRead: number }) =>
      Math.round((r.bytesFetched / r.bytesRead) * 100) / 100;

    const lazyfs = mbps(SIZE, engineMs);
    const scp = mbps(SIZE, scpMs);
    const scpSameCipher = mbps(SIZE, scpSameCipherMs);
    const rows: [string, string][] = [
      ["file size", `${SIZE} bytes`],
      ["scp whole file (best)", `${Math.round(scpMs)} ms, ${scp} MB/s; runs ${fmt(scpRuns)}`],
      [
        "lazyfs whole file (best)",
        `${Math.round(engineMs)} ms, ${lazyfs} MB/s; runs ${fmt(engineRuns)}`,
      ],
      [
        `scp -c ${ENGINE_CIPHER} (best)`,
        `${Math.round(scpSameCipherMs)} ms, ${scpSameCipher} MB/s; runs ${fmt(scpSameCipherRuns)}`,
      ],
      ["lazyfs origin reads", String(requests)],
      [
        "lazyfs / scp",
        `${(lazyfs / scp).toFixed(2)}x (target >= 0.9x -> ${lazyfs / scp >= 0.9 ? "met" : "MISSED"})`,
      ],
      ["lazyfs / scp, same cipher", `${(lazyfs / scpSameCipher).toFixed(2)}x`],
      [
        `first read of a file (${FIRST_READ_FILES} files, 4 KiB each)`,
        `median ${first.median} ms, max ${first.max} ms`,
      ],
      ["sparse reads", `${reads} x ${readLen} bytes in ${Math.round(sparse.ms)} ms`],
      ["sparse bytes read", String(bytesRead)],
      [
        `sparse bytes fetched, defaults (${sparse.blockSize >> 10} KiB blocks)`,
        `${sparse.bytesFetched} (${sparse.originReads} origin reads, ${ratio(sparse)}x read; ` +
          `target <= 1.2x -> ${ratio(sparse) <= 1.2 ? "met" : "MISSED"})`,
      ],
      [
        `sparse bytes fetched, --block-size ${OLD_BLOCK >> 10}K (old default)`,
        `${sparseOld.bytesFetched} (${sparseOld.originReads} origin reads, ${ratio(sparseOld)}x read)`,
      ],
    ];
    const w = Math.max(...rows.map((r) => r[0].length));
    for (const [k, v] of rows) console.log(`${k.padEnd(w)}  ${v}`);
    console.log(
      JSON.stringify({
        full_fetch_MBps: { lazyfs, scp, scp_same_cipher: scpSameCipher },
        ratio: Math.round((lazyfs / scp) * 100) / 100,
        ratio_same_cipher: Math.round((lazyfs / scpSameCipher) * 100) / 100,
        sparse: {
          bytes_read: bytesRead,
          bytes_fetched: sparse.bytesFetched,
          fetched_per_read: ratio(sparse),
          reads,
          origin_reads: sparse.originReads,
          block_size: sparse.blockSize,
        },
        first_read_ms: first,
        sparse_256k_blocks: {
          bytes_read: sparseOld.bytesRead,
          bytes_fetched: sparseOld.bytesFetched,
          fetched_per_read: ratio(sparseOld),
          reads: sparseOld.reads,
          origin_reads: sparseOld.originReads,
          block_size: sparseOld.blockSize,
        },
      }),
    );
  } finally {
    await sshd.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
