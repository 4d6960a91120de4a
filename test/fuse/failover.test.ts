/**
 * Failover of a FUSE server (fuse/supervisor.ts, fuse/handover.ts) through a real mount: a
 * supervisor in this process owns /dev/fuse, a child serves it; the child is killed with
 * SIGKILL while a reader in a third process reads a file with direct I/O (every read a FUSE
 * READ): the reader sees no error and exact bytes. Also: a server that keeps crashing at start
 * makes the supervisor give up and leave the mount; unmounting ends the supervision.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { after, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { mountInfo, Supervisor } from "../../src/fuse/index.js";
import { DATA_SIZE, pattern } from "./failover-server.js";
import { Scratch, sha256 } from "./helpers.js";

const SERVER = fileURLToPath(new URL("./failover-server.js", import.meta.url));
const scratch = new Scratch();
after(() => scratch.cleanup());

function supervise(
  name: string,
  env: NodeJS.ProcessEnv = {},
  quickMs?: number,
): Promise<Supervisor> {
  return Supervisor.start({
    ...(quickMs === undefined ? {} : { quickMs }),
    mountpoint: scratch.sub(name),
    mount: { subtype: "failovertest" },
    command: process.execPath,
    args: [SERVER],
    env: { ...process.env, ...env },
  });
}

async function serving(s: Supervisor, not = 0): Promise<number> {
  for (let i = 0; i < 1000; i++) {
    if (s.servingPid !== 0 && s.servingPid !== not) return s.servingPid;
    await sleep(10);
  }
  throw new Error("no server came up");
}

/** Reads `file` in 64 KiB reads, pass after pass until `stop` exists; prints a sha256 per pass. */
const READER = `import hashlib,os,sys
f,stop=sys.argv[1],sys.argv[2]
while True:
  h=hashlib.sha256()
  with open(f,"rb",buffering=0) as fh:
    while True:
      b=fh.read(65536)
      if not b: break
      h.update(b)
  print(h.hexdigest(),flush=True)
  if os.path.exists(stop): break`;

describe("supervised FUSE server", () => {
  test("killed ten times during reads: the reader stalls, never fails, reads exact bytes", async () => {
    // Kills come faster than the default quickMs: only a server that never served is "quick".
    const s = await supervise("ten-kills", {}, 0);
    const want = sha256(pattern(0, DATA_SIZE));
    const stop = path.join(scratch.dir, "stop-reader");
    let pid = await serving(s);
    const reader = spawn("python3", ["-c", READER, path.join(s.mountpoint, "data.bin"), stop], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    scratch.track(reader);
    let out = "";
    let err = "";
    reader.stdout.on("data", (d) => {
      out += d;
    });
    reader.stderr.on("data", (d) => {
      err += d;
    });
    const ended = new Promise<number | null>((r) => reader.on("exit", (c) => r(c)));
    for (let kill = 0; kill < 10; kill++) {
      await sleep(150 + kill * 37);
      assert.equal(reader.exitCode, null, `the reader ended early: ${err}`);
      process.kill(pid, "SIGKILL");
      pid = await serving(s, pid);
    }
    fs.writeFileSync(stop, "");
    const code = await ended;
    assert.equal(err, "");
    assert.equal(code, 0);
    const passes = out.trim().split("\n");
    assert.ok(passes.length >= 1);
    for (const h of passes) assert.equal(h, want);
    assert.equal(s.restarts, 10);
    const end = await s.stop();
    assert.equal(end.kind, "unmounted");
    assert.equal(mountInfo(s.mountpoint), undefined);
  });

  test("a server that keeps dying at start: the supervisor gives up and leaves the mount", async () => {
    const s = await supervise("crashing", { FAILOVER_CRASH_RESTARTED: "1" });
    const pid = await serving(s);
    process.kill(pid, "SIGKILL");
    const end = await s.done;
    assert.equal(end.kind, "gave-up");
    assert.match(end.kind === "gave-up" ? end.reason : "", /died 5 times .*exit code 3/);
    assert.equal(s.restarts, 4, "the killed server and four that died at start");
    assert.ok(mountInfo(s.mountpoint), "the mount stays for a later recovery");
    // Nobody holds the device any more: the mount is stale, as after any crash.
    assert.throws(() => fs.readdirSync(s.mountpoint), /ENOTCONN|ECONNABORTED/);
  });
});
