/**
 * Failover benchmark: how long a reader stalls when the FUSE server is killed with SIGKILL and
 * the supervisor hands the connection to a new one (fuse/supervisor.ts), with and without a
 * standby server started in advance. The server is test/fuse/failover-server.ts (every read
 * of its file is a FUSE READ, answered at once); a python reader reads 64 KiB at a time in a
 * loop and reports every read that took over 5 ms. Each kill's stall is the longest read that
 * spans it. KILLS kills per mode (LAZYFS_BENCH_KILLS, default 10), one every 800 ms.
 * Prints a table; the last line is JSON: { standby: {median_ms, max_ms, stalls_ms}, cold: ... }.
 */
import { spawn } from "node:child_process";
import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { Supervisor } from "../src/fuse/index.js";

const SERVER = fileURLToPath(new URL("../test/fuse/failover-server.js", import.meta.url));
const KILLS = Number(process.env.LAZYFS_BENCH_KILLS ?? 10);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const READER = `import os,sys,time
f,stop=sys.argv[1],sys.argv[2]
fd=os.open(f,os.O_RDONLY)
size=os.fstat(fd).st_size
off=0
while not os.path.exists(stop):
  t=time.time()
  os.pread(fd,65536,off)
  d=(time.time()-t)*1000
  if d>5: print('%d %d' % (round(time.time()*1000), round(d)), flush=True)
  off=(off+65536)%size`;

async function serving(s: Supervisor, not: number): Promise<number> {
  for (;;) {
    if (s.servingPid !== 0 && s.servingPid !== not) return s.servingPid;
    await sleep(5);
  }
}

async function measure(standby: boolean): Promise<number[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "bench-failover-"));
  const mp = path.join(dir, "mnt");
  fs.mkdirSync(mp);
  const s = await Supervisor.start({
    mountpoint: mp,
    mount: { subtype: "benchfailover" },
    command: process.execPath,
    args: [SERVER],
    env: { ...process.env, FAILOVER_READ_DELAY_MS: "0", LAZYFS_LOG: "error" },
    quickMs: 0,
    standby,
  });
  const stop = path.join(dir, "stop");
  let pid = await serving(s, 0);
  const reader = spawn("python3", ["-c", READER, path.join(mp, "data.bin"), stop], {
    stdio: ["ignore", "pipe", "inherit"],
  });
  let out = "";
  reader.stdout.on("data", (d) => {
    out += d;
  });
  const ended = new Promise((r) => reader.on("exit", r));
  const kills: [number, number][] = [];
  for (let k = 0; k < KILLS; k++) {
    await sleep(800); // long enough for a standby to be ready again
    const sent = Date.now();
    process.kill(pid, "SIGKILL");
    pid = await serving(s, pid);
    kills.push([sent, Date.now()]);
  }
  fs.writeFileSync(stop, "");
  await ended;
  await s.stop();
  fs.rmSync(dir, { recursive: true, force: true });
  const slow = out
    .trim()
    .split("\n")
    .filter((l) => l)
    .map((l) => l.split(" ").map(Number) as [number, number]);
  return kills.map(([sent, up]) =>
    Math.max(0, ...slow.filter(([end, d]) => end >= sent && end - d <= up).map(([, d]) => d)),
  );
}

function stats(stalls: number[]) {
  const sorted = [...stalls].sort((a, b) => a - b);
  return {
    median_ms: sorted[Math.floor(sorted.length / 2)] ?? 0,
    max_ms: sorted[sorted.length - 1] ?? 0,
    stalls_ms: stalls,
  };
}

const standby = stats(await measure(true));
const cold = stats(await measure(false));
console.log("| mode | kills | median stall | max stall | stalls (ms) |");
console.log("| --- | --- | --- | --- | --- |");
for (const [name, r] of [
  ["standby", standby],
  ["cold start", cold],
] as const) {
  console.log(
    `| ${name} | ${r.stalls_ms.length} | ${r.median_ms} ms | ${r.max_ms} ms | ${r.stalls_ms.join(", ")} |`,
  );
}
console.log(JSON.stringify({ standby, cold }));
