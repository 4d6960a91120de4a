/**
 * End to end, observability: truthful byte figures (a scrub file's bytes never counted as
 * fetched, the link's counters agreeing with status), the access log of a migrated reader,
 * the metrics endpoints scraped over HTTP and parsed as OpenMetrics, and the events of a
 * migration's life.
 */
import assert from "node:assert/strict";
import { createHash, randomBytes } from "node:crypto";
import { after, before, describe, test } from "node:test";
import { DATA_DIR, type HostPair } from "../../src/hosts/index.js";
import type { AccessRecord } from "../../src/lazy/index.js";
import type { MigrationEvent } from "../../src/migration/index.js";
import {
  AWAIT_GO,
  CLI,
  type LazyfsOnB,
  linesIn,
  type Migrated,
  startHosts,
  stopHosts,
  waitFor,
} from "./helpers.js";
import { parseOpenMetrics, sampleValue } from "./openmetrics.js";

const MiB = 1 << 20;
const sha256 = (b: Buffer | string) => createHash("sha256").update(b).digest("hex");

let pair: HostPair;
let lazyfs: LazyfsOnB;

/** A fresh directory on A for one test: the reader's cwd, so it holds everything it opens. */
async function freshDir(tag: string): Promise<string> {
  const dir = `${DATA_DIR}/${tag}-${randomBytes(4).toString("hex")}`;
  await pair.a.exec("mkdir", ["-p", dir]);
  return dir;
}

async function randomFile(path: string, bytes: number): Promise<string> {
  await pair.a.exec("sh", ["-c", `head -c ${bytes} /dev/urandom > '${path}'`]);
  return (await pair.a.exec("sh", ["-c", `sha256sum < '${path}'`])).stdout.split(" ")[0]!;
}

/** Starts `script` on A in `dir` (stdout to `dir`/out) and waits for its first line. */
async function startReader(dir: string, script: string, args: string[]) {
  const out = `${dir}/out`;
  const wl = await pair.a.startWorkload("python3", ["-c", `${AWAIT_GO}\n${script}`, ...args], {
    stdout: out,
    cwd: dir,
  });
  await waitFor("the reader", async () =>
    (await linesIn(pair.a, out)).length >= 1 ? true : undefined,
  );
  return { pid: wl.pid, out };
}

/** GET http://127.0.0.1:port/metrics from inside host b with node's http client. */
async function scrape(port: number): Promise<{ status: number; type: string; body: string }> {
  const script = `const http=require("node:http");
http.get({host:"127.0.0.1",port:${port},path:"/metrics",headers:{accept:"application/openmetrics-text; version=1.0.0"}},(r)=>{
  let b="";r.setEncoding("utf8");r.on("data",(c)=>{b+=c});
  r.on("end",()=>process.stdout.write(JSON.stringify({status:r.statusCode,type:r.headers["content-type"],body:b})));
}).on("error",(e)=>{process.stderr.write(e.message);process.exit(1)});`;
  const r = await pair.b.exec(process.execPath, ["-e", script], { allowFailure: true });
  if (r.code !== 0) throw new Error(`scrape of port ${port} failed: ${r.stderr}`);
  return JSON.parse(r.stdout) as { status: number; type: string; body: string };
}

const go = (m: Migrated) => pair.b.exec("kill", ["-USR1", String(m.pid)]);

describe("observability", { timeout: 600_000 }, () => {
  before(async () => {
    ({ pair, lazyfs } = await startHosts());
  });
  after(async () => {
    await stopHosts({ pair, lazyfs });
  });

  test("scrub bytes are synthesized, not fetched; link, status, metrics and events agree", async () => {
    const dir = await freshDir("honeypot");
    const secret = `${dir}/cred.secret`;
    const data = `${dir}/data.bin`;
    await randomFile(secret, 4 * MiB);
    const dataSha = await randomFile(data, 8 * MiB);
    // After "go": list its directory (the lazy cwd), then read both files whole.
    const READER = `import os,sys,hashlib
fs=[open(p,'rb') for p in sys.argv[1:]]
print('open',flush=True)
await_go()
os.stat('.'); os.listdir('.')
for f in fs: print(hashlib.sha256(f.read()).hexdigest(),flush=True)
time.sleep(600)`;
    const reader = await startReader(dir, READER, [secret, data]);
    const port = 20000 + Math.floor(Math.random() * 20000);
    const c0 = await pair.link.counters();
    const m = await lazyfs.migrate(reader.pid, [
      "--policy",
      "*.secret=scrub",
      "--scrub",
      "zeros",
      "--metrics",
      `127.0.0.1:${port}`,
    ]);
    let metricsServer: number | undefined;
    try {
      await go(m);
      const lines = await waitFor("the hashes on B", async () => {
        const l = await linesIn(pair.b, `${m.mountpoint}${reader.out}`);
        return l.length >= 3 ? l : undefined;
      });
      assert.deepEqual(lines.slice(1), [sha256(Buffer.alloc(4 * MiB)), dataSha]);
      // Everything it needs is here: the origin is let go.
      const st = await waitFor("the origin released", async () => {
        const s = await lazyfs.status(m.id);
        return s.originState === "released" ? s : undefined;
      });
      const c1 = await pair.link.counters();

      const fSecret = st.perFile.find((f) => f.path === secret)!;
      assert.equal(fSecret.policy, "scrub");
      assert.equal(fSecret.bytesFromOrigin, 0, "not one byte of the secret left the origin");
      assert.equal(fSecret.bytesFetched, 0);
      assert.equal(fSecret.bytesSynthesized, 4 * MiB);
      assert.equal(fSecret.lastOriginAccessMs, null);
      const fData = st.perFile.find((f) => f.path === data)!;
      assert.equal(fData.bytesFromOrigin, 8 * MiB);
      assert.equal(fData.bytesSynthesized, 0);
      assert.ok(fData.lastOriginAccessMs !== null);
      const sum = (k: "bytesFromOrigin" | "bytesSynthesized") =>
        st.perFile.reduce((n, f) => n + f[k], 0);
      assert.equal(st.total.bytesFromOrigin, sum("bytesFromOrigin"));
      assert.equal(st.total.bytesFetched, st.total.bytesFromOrigin);
      assert.equal(st.total.bytesSynthesized, 4 * MiB);
      assert.ok(st.total.bytesWritten > 0, "the hashes it printed were written locally");

      // What crossed the link from A: the images, the origin bytes, and SSH's framing.
      const sent = c1.aToB - c0.aToB;
      assert.ok(sent >= st.total.bytesFromOrigin, `link ${sent} < origin bytes`);
      assert.ok(
        sent - st.total.bytesFromOrigin <= m.timeline.imageBytes + MiB,
        `link ${sent} vs origin bytes ${st.total.bytesFromOrigin} + images ${m.timeline.imageBytes}`,
      );

      // Per origin: the SSH origin with its bytes and state, the scrub generator apart.
      const host = st.origins.find((o) => o.kind === "origin")!;
      assert.equal(host.name, `root@${pair.a.address}:22`);
      assert.equal(host.bytes, st.total.bytesFromOrigin);
      assert.equal(host.state, "released");
      assert.ok(host.requests > 0);
      assert.equal(host.errors, 0);
      const scrub = st.origins.find((o) => o.kind === "scrub")!;
      assert.equal(scrub.bytes, 4 * MiB);
      const table = (await lazyfs.run(["status", m.id])).stdout;
      assert.match(table, /RECONNECTS/);
      assert.match(table, /scrub:zeros/);

      // The daemon's own endpoint, then the host's, both parsed strictly as OpenMetrics.
      const own = await scrape(port);
      assert.equal(own.status, 200);
      assert.match(own.type, /^application\/openmetrics-text; version=1\.0\.0/);
      const fams = parseOpenMetrics(own.body);
      const origin = sampleValue(fams, "lazyfs_origin_bytes", { migration: m.id });
      assert.equal(origin, st.total.bytesFromOrigin);
      assert.equal(
        sampleValue(fams, "lazyfs_synthesized_bytes", { migration: m.id, policy: "scrub" }),
        4 * MiB,
      );
      assert.equal(
        sampleValue(fams, "lazyfs_origin_bytes", { migration: m.id, policy: "scrub" }),
        0,
      );
      assert.equal(sampleValue(fams, "lazyfs_daemon_up", { migration: m.id }), 1);
      assert.equal(sampleValue(fams, "lazyfs_independent", { migration: m.id }), 1);
      assert.equal(fams.get("lazyfs_origin_bytes")?.type, "counter");

      // A migration whose daemon is gone: a state directory with a migration's name.
      let dead = m.id;
      while (dead === m.id) dead = `m${randomBytes(3).toString("hex")}`;
      await pair.b.exec("mkdir", ["-p", `${lazyfs.stateDir}/${dead}`]);
      const hostPort = port + 1;
      const wl = await pair.b.startWorkload(
        process.execPath,
        [CLI, "metrics", "--listen", `127.0.0.1:${hostPort}`],
        {
          stdout: `/tmp/lazyfs-metrics-${hostPort}.log`,
          env: { ...process.env, LAZYFS_STATE_DIR: lazyfs.stateDir },
        },
      );
      metricsServer = wl.pid;
      const all = await waitFor("lazyfs metrics --listen", () =>
        scrape(hostPort).catch(() => undefined),
      );
      const hostFams = parseOpenMetrics(all.body);
      assert.equal(
        sampleValue(hostFams, "lazyfs_origin_bytes", { migration: m.id }),
        st.total.bytesFromOrigin,
      );
      assert.equal(sampleValue(hostFams, "lazyfs_daemon_up", { migration: m.id }), 1);
      assert.equal(
        sampleValue(hostFams, "lazyfs_daemon_up", { migration: dead }),
        0,
        "a dead one is down",
      );
      await pair.b.exec("rm", ["-rf", `${lazyfs.stateDir}/${dead}`]);

      // Its life, in order.
      const ev = JSON.parse((await lazyfs.run(["status", m.id, "--events", "--json"])).stdout) as {
        id: string;
        events: MigrationEvent[];
      }[];
      const types = ev[0]!.events.map((e) => e.type);
      const order = [
        "dump",
        "image-transfer",
        "restore",
        "first-origin-fetch",
        "independent",
        "origin-released",
      ];
      const at = order.map((t) => types.indexOf(t));
      assert.ok(
        at.every((i) => i >= 0),
        `all of ${order} in ${types}`,
      );
      assert.deepEqual(
        [...at].sort((a, b) => a - b),
        at,
        `in order: ${types}`,
      );
      const shown = (await lazyfs.run(["status", m.id, "--events"])).stdout;
      assert.match(shown, /dump.*\n(.*\n)*.*restore.*\n(.*\n)*.*first-origin-fetch/);
    } finally {
      if (metricsServer) await pair.b.exec("kill", [String(metricsServer)], { allowFailure: true });
      await lazyfs.stop(m);
    }
  });

  test("the access log names every file a migrated reader touched, with its ranges, in order", async (t) => {
    const dir = await freshDir("accesslog");
    const big = `${dir}/big.bin`;
    const small = `${dir}/notes.txt`;
    const bigSha = await randomFile(big, 64 * MiB);
    await randomFile(small, 16 * 1024);
    // After "go": a bit of notes.txt, all of big.bin in 1 MiB reads, another bit of notes.txt.
    const READER = `import os,sys,hashlib
b=os.open(sys.argv[1],os.O_RDONLY); s=os.open(sys.argv[2],os.O_RDONLY)
print('open',flush=True)
await_go()
os.pread(s,100,1000)
h=hashlib.sha256()
while True:
  k=os.read(b,1<<20)
  if not k: break
  h.update(k)
os.pread(s,100,9000)
print(h.hexdigest(),flush=True)
time.sleep(600)`;
    const reader = await startReader(dir, READER, [big, small]);
    const logFile = `/var/tmp/lazyfs-access-${randomBytes(4).toString("hex")}.jsonl`;
    const m = await lazyfs.migrate(reader.pid, ["--access-log", logFile]);
    try {
      await go(m);
      const out = await waitFor("the reader done on B", async () => {
        const l = await linesIn(pair.b, `${m.mountpoint}${reader.out}`);
        return l.length >= 2 ? l : undefined;
      });
      assert.deepEqual(out, ["open", bigSha], "it read big.bin whole");
      // A run is written once it ended (no request for a second), or at the unmount.
      const recs = await waitFor("big.bin's reads in the log", async () => {
        const all = JSON.parse(
          (await lazyfs.run(["log", m.id, "--json"])).stdout,
        ) as AccessRecord[];
        const bytes = all
          .filter((r) => r.op === "read" && r.path === big)
          .reduce((n, r) => n + (r.length ?? 0), 0);
        return bytes >= 64 * MiB && all.some((r) => r.path === small && r.offset === 8192)
          ? all
          : undefined;
      });
      const reads = (p: string) => recs.filter((r) => r.op === "read" && r.path === p);
      const bigReads = reads(big);
      assert.ok(
        bigReads.length > 0 && bigReads.length < 100,
        `${bigReads.length} records for 64 MiB`,
      );
      t.diagnostic(`${bigReads.length} records for a sequential 64 MiB read`);
      let next = 0;
      for (const r of bigReads) {
        assert.equal(r.offset, next, "contiguous ranges in time order");
        next += r.length!;
        assert.equal(r.pid, m.pid, "the caller's pid");
        assert.ok(r.source === "origin" || r.source === "store", `source ${r.source}`);
      }
      assert.equal(next, 64 * MiB, "every byte of big.bin is in the log");
      assert.equal(bigReads.reduce((n, r) => n + (r.count ?? 1), 0) > bigReads.length, true);
      const smallReads = reads(small);
      const covers = (off: number) =>
        smallReads.find((r) => r.offset! <= off && off < r.offset! + r.length!);
      const first = covers(1000);
      const last = covers(9000);
      assert.ok(first && last, `notes.txt ranges: ${JSON.stringify(smallReads)}`);
      assert.equal(first.source, "origin");
      assert.ok(first.t <= bigReads[0]!.t, "notes.txt first");
      assert.ok(last.t >= bigReads[bigReads.length - 1]!.t, "notes.txt again last");
      assert.ok(
        recs.some((r) => r.op === "open" && r.path === big) || recs.some((r) => r.path === big),
      );
      // The process's output went to a local write.
      assert.ok(
        recs.some((r) => r.op === "write" && r.path === reader.out && r.source === "local-write"),
      );

      const onlyTxt = JSON.parse(
        (await lazyfs.run(["log", m.id, "--path", "*.txt", "--json"])).stdout,
      ) as AccessRecord[];
      assert.ok(onlyTxt.length > 0);
      assert.ok(
        onlyTxt.every((r) => r.path === small),
        "--path filters",
      );
      const readsOfPid = JSON.parse(
        (await lazyfs.run(["log", m.id, "--op", "read", "--pid", String(m.pid), "--json"])).stdout,
      ) as AccessRecord[];
      assert.ok(
        readsOfPid.length > 0 && readsOfPid.every((r) => r.op === "read" && r.pid === m.pid),
      );
      const shown = (await lazyfs.run(["log", m.id, "--path", `${dir}/*.bin`])).stdout;
      assert.match(shown, /^TIME\s+PID\s+OP/);
      assert.ok(shown.includes(big) && !shown.includes(small));
      const bad = await lazyfs.run(["log", "nosuchmigration"], true);
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, /^lazyfs: no migration nosuchmigration/m);
    } finally {
      await lazyfs.stop(m);
      await pair.b.exec("rm", ["-f", logFile]);
    }
  });
});
