/**
 * Failover of a FUSE server (fuse/supervisor.ts, fuse/handover.ts) through a real mount: a
 * supervisor in this process owns /dev/fuse, a child serves it; the child is killed with
 * SIGKILL while a reader in a third process reads a file with direct I/O (every read a FUSE
 * READ): the reader sees no error and exact bytes. Also: a server that keeps crashing at start
 * is retried with a bounded backoff for as long as it takes; unmounting ends the supervision.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import fs from "node:fs";
import path from "node:path";
import { after, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import {
  MemoryFileSystem,
  mountInfo,
  Supervisor,
  type SupervisorOptions,
  type SupervisorState,
} from "../../src/fuse/index.js";
import { DATA_SIZE, pattern } from "./failover-server.js";
import { SUPERVISOR } from "./failover-supervisor.js";
import { Scratch, sha256 } from "./helpers.js";

const SERVER = fileURLToPath(new URL("./failover-server.js", import.meta.url));
const scratch = new Scratch();
after(() => scratch.cleanup());

function supervise(
  name: string,
  env: NodeJS.ProcessEnv = {},
  quickMs?: number,
  stateFile?: string,
  extra: Partial<SupervisorOptions> = {},
): Promise<Supervisor> {
  return Supervisor.start({
    ...extra,
    ...(quickMs === undefined ? {} : { quickMs }),
    ...(stateFile ? { stateFile } : {}),
    mountpoint: scratch.sub(name),
    mount: { subtype: "failovertest" },
    command: process.execPath,
    args: [SERVER],
    env: { ...process.env, ...env },
  });
}

/** The kernel stacks of process `pid`'s threads, joined ("" once it is gone). */
function threadStacks(pid: number): string {
  try {
    return fs
      .readdirSync(`/proc/${pid}/task`)
      .map((t) => fs.readFileSync(`/proc/${pid}/task/${t}/stack`, "utf8"))
      .join("");
  } catch {
    return "";
  }
}

async function serving(s: Supervisor, not = 0): Promise<number> {
  for (let i = 0; i < 1000; i++) {
    if (s.servingPid !== 0 && s.servingPid !== not) return s.servingPid;
    await sleep(10);
  }
  throw new Error("no server came up");
}

/** A python3 script running in another process, its output collected. */
function python(script: string, ...args: string[]) {
  const proc = spawn("python3", ["-c", script, ...args], { stdio: ["ignore", "pipe", "pipe"] });
  scratch.track(proc);
  const r = {
    proc,
    out: "",
    err: "",
    exited: new Promise<number | null>((res) => proc.on("exit", (c) => res(c))),
  };
  proc.stdout.on("data", (d) => {
    r.out += d;
  });
  proc.stderr.on("data", (d) => {
    r.err += d;
  });
  return r;
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
    const reader = python(READER, path.join(s.mountpoint, "data.bin"), stop);
    for (let kill = 0; kill < 10; kill++) {
      await sleep(150 + kill * 37);
      assert.equal(reader.proc.exitCode, null, `the reader ended early: ${reader.err}`);
      process.kill(pid, "SIGKILL");
      pid = await serving(s, pid);
    }
    fs.writeFileSync(stop, "");
    const code = await reader.exited;
    assert.equal(reader.err, "");
    assert.equal(code, 0);
    const passes = reader.out.trim().split("\n");
    assert.ok(passes.length >= 1);
    for (const h of passes) assert.equal(h, want);
    assert.equal(s.restarts, 10);
    const end = await s.stop();
    assert.equal(end.kind, "unmounted");
    assert.equal(mountInfo(s.mountpoint), undefined);
  });

  test("kernel passthrough opens survive a failover: the new server reopens with the same backing id", async (t) => {
    const backing = path.join(scratch.dir, "pt-backing.bin");
    const content = pattern(0, 1 << 20);
    fs.writeFileSync(backing, content);
    const stateFile = path.join(scratch.dir, "passthrough.json");
    const s = await supervise("passthrough", { FAILOVER_BACKING: backing }, 0, stateFile);
    // A failed assertion must not leave the supervisor (and this test file) running.
    let ended = false;
    void s.done.then(() => {
      ended = true;
    });
    t.after(() => (ended ? undefined : s.stop().then(() => {})));
    let pid = await serving(s);
    const file = path.join(s.mountpoint, "pt.bin");
    // An open held across the kill: the inode stays in passthrough mode with its backing id.
    const held = fs.openSync(file, "r");
    const table = JSON.parse(fs.readFileSync(stateFile, "utf8")) as { backing: unknown[] };
    assert.equal(table.backing.length, 1, "the open was a passthrough open");
    for (let kill = 0; kill < 3; kill++) {
      process.kill(pid, "SIGKILL");
      pid = await serving(s, pid);
      // A new open of the same inode (EIO without the table) and one more while it is open.
      assert.equal(sha256(fs.readFileSync(file)), sha256(content));
    }
    const buf = Buffer.alloc(content.length);
    assert.equal(fs.readSync(held, buf, 0, buf.length, 0), content.length);
    assert.equal(sha256(buf), sha256(content));
    fs.closeSync(held);
    // Released through the new server: the inode leaves passthrough mode, later opens work.
    process.kill(pid, "SIGKILL");
    pid = await serving(s, pid);
    assert.equal(sha256(fs.readFileSync(file)), sha256(content));
    const end = await s.stop();
    assert.equal(end.kind, "unmounted");
    assert.equal(fs.existsSync(stateFile), false, "the table goes with the connection");
  });

  test("a server killed while its own thread waits on the mount: the next server takes over", async () => {
    const s = await supervise("own-stat", { FAILOVER_HANG_OWN_STAT: "1" });
    const pid = await serving(s);
    // Wait until its thread's stat of the mount has been read and waits for an answer.
    for (let i = 0; i < 500 && !/fuse/.test(threadStacks(pid)); i++) await sleep(10);
    process.kill(pid, "SIGKILL");
    const next = await serving(s, pid);
    assert.notEqual(next, pid);
    assert.equal(s.restarts, 1);
    assert.deepEqual(fs.readdirSync(s.mountpoint), ["data.bin"]);
    // The new server answered the stat: the killed one has exited for good.
    for (let i = 0; i < 500 && fs.existsSync(`/proc/${pid}`); i++) await sleep(10);
    assert.equal(fs.existsSync(`/proc/${pid}`), false, "the killed server is gone");
    const end = await s.stop();
    assert.equal(end.kind, "unmounted");
  });

  test("the supervisor killed: the server starts one that adopts the connection; a later server kill is survived", async (t) => {
    const mountpoint = scratch.sub("adopt");
    const stateFile = path.join(scratch.dir, "adopt-state.json");
    const state = () => {
      try {
        return JSON.parse(fs.readFileSync(stateFile, "utf8")) as SupervisorState & { pid: number };
      } catch {
        return undefined;
      }
    };
    const until = async <T>(what: string, f: () => T | undefined): Promise<T> => {
      for (let i = 0; i < 2000; i++) {
        const v = f();
        if (v !== undefined) return v;
        await sleep(10);
      }
      throw new Error(`timed out waiting for ${what}`);
    };
    const first = spawn(process.execPath, [SUPERVISOR, mountpoint], {
      stdio: "inherit",
      env: { ...process.env, FAILOVER_SUP_STATE: stateFile },
    });
    scratch.track(first);
    const s0 = await until("a server", () => {
      const st = state();
      return st?.servingPid ? st : undefined;
    });
    const stop = path.join(scratch.dir, "stop-adopt-reader");
    const reader = python(READER, path.join(mountpoint, "data.bin"), stop);
    let lastSupervisor = s0.pid;
    t.after(() => {
      fs.writeFileSync(stop, "");
      try {
        process.kill(lastSupervisor, "SIGTERM");
      } catch {
        /* gone */
      }
    });
    await sleep(200);
    first.kill("SIGKILL");
    const s1 = await until("a new supervisor", () => {
      const st = state();
      return st && st.pid !== s0.pid ? st : undefined;
    });
    lastSupervisor = s1.pid;
    assert.equal(s1.servingPid, s0.servingPid, "the server went on serving");
    await sleep(300);
    process.kill(s1.servingPid, "SIGKILL");
    const s2 = await until("a new server", () => {
      const st = state();
      return st?.servingPid && st.servingPid !== s0.servingPid ? st : undefined;
    });
    assert.equal(s2.pid, s1.pid);
    assert.equal(s2.restarts, 1);
    await sleep(200);
    fs.writeFileSync(stop, "");
    assert.equal(await reader.exited, 0);
    assert.equal(reader.err, "");
    for (const h of reader.out.trim().split("\n")) assert.equal(h, sha256(pattern(0, DATA_SIZE)));
    process.kill(s1.pid, "SIGTERM");
    await until("the mount to go", () => (mountInfo(mountpoint) ? undefined : true));
    await until("the supervisor to end", () =>
      fs.existsSync(`/proc/${s1.pid}`) ? undefined : true,
    );
  });

  test("a server that keeps dying at start: retried with a bounded backoff until one serves", async () => {
    const crashing = path.join(scratch.sub("crash-flag"), "crash");
    fs.writeFileSync(crashing, "");
    const states: SupervisorState[] = [];
    const s = await supervise(
      "crashing",
      { FAILOVER_CRASH_WHILE: crashing },
      undefined,
      undefined,
      {
        backoffMs: 10,
        maxBackoffMs: 200,
        onState: (st) => states.push(st),
      },
    );
    const pid = await serving(s);
    process.kill(pid, "SIGKILL");
    // More deaths at start than the five after which it used to give up for good.
    for (let i = 0; i < 3000 && s.restarts < 8; i++) await sleep(10);
    assert.ok(s.restarts >= 8, `still restarting (${s.restarts} restarts)`);
    assert.ok(mountInfo(s.mountpoint), "the mount stays");
    const failing = states.filter((st) => st.servingPid === 0).at(-1);
    assert.ok(failing && failing.quickFailures >= 6, "the deaths at start are reported");
    assert.equal(failing?.lastExit, "exit code 3");
    assert.ok(failing?.retryAtMs, "so is the next try");
    const delays = states.filter((st) => st.retryAtMs).length;
    assert.ok(delays >= 8);
    fs.rmSync(crashing);
    const next = await serving(s, pid);
    assert.notEqual(next, pid);
    assert.deepEqual(fs.readdirSync(s.mountpoint), ["data.bin"]);
    assert.equal(states.at(-1)?.servingPid, next, "serving again is reported");
    const end = await s.stop();
    assert.equal(end.kind, "unmounted");
  });
});

describe("resent namespace operations", () => {
  test("carried out by a server that never answered: the repeat answers as the first run", async () => {
    // Each operation is done, then its reply "lost" (as when the server dies right after it);
    // FUSE_NOTIFY_RESEND brings it back, and the repeat finds its work already done.
    const lost = new Set<string>();
    let pendingOps = 0;
    const lose = async <T>(what: string, run: () => Promise<T>): Promise<T> => {
      const v = await run();
      if (lost.has(what)) return v;
      lost.add(what);
      pendingOps++;
      return new Promise<T>(() => {});
    };
    class Forgetful extends MemoryFileSystem {
      override mkdir(...a: Parameters<MemoryFileSystem["mkdir"]>) {
        return lose("mkdir", () => super.mkdir(...a));
      }
      override create(...a: Parameters<MemoryFileSystem["create"]>) {
        return lose("create", () => super.create(...a));
      }
      override unlink(...a: Parameters<MemoryFileSystem["unlink"]>) {
        return lose("unlink", () => super.unlink(...a));
      }
      override rename(...a: Parameters<MemoryFileSystem["rename"]>) {
        return lose("rename", () => super.rename(...a));
      }
    }
    const mem = new Forgetful();
    mem.addFile("old.txt", "x");
    mem.addFile("gone.txt", "y");
    const m = await scratch.mount("resent-ops", mem);
    const d = m.mountpoint;
    const script = `import os,sys
d=sys.argv[1]
os.mkdir(d+"/dir")
fd=os.open(d+"/new.txt", os.O_CREAT|os.O_WRONLY|os.O_EXCL, 0o644)
os.write(fd,b"made"); os.close(fd)
os.unlink(d+"/gone.txt")
os.rename(d+"/old.txt", d+"/renamed.txt")
print(sorted(os.listdir(d)), open(d+"/new.txt").read())`;
    const child = python(script, d);
    for (let op = 1; op <= 4; op++) {
      for (let i = 0; i < 500 && pendingOps < op; i++) await sleep(10);
      assert.equal(pendingOps, op, `operation ${op} reached the server: ${child.err}`);
      assert.equal(await m.session.resend(), true);
    }
    assert.equal(await child.exited, 0, child.err);
    assert.equal(child.out, "['dir', 'new.txt', 'renamed.txt'] made\n");
  });
});
