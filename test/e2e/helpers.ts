/**
 * What the end-to-end tests share: the real `lazyfs` CLI run inside host b, a migration of a
 * pid from host a, waiting for a condition, reading lines of a file inside a host.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import type { DaemonStatus } from "../../src/daemon/index.js";
import {
  type ClientHostPair,
  cleanupStaleHosts,
  createHostPair,
  type Host,
  type HostPair,
  type SshdHandle,
} from "../../src/hosts/index.js";

export const CLI = fileURLToPath(new URL("../../src/cli/main.js", import.meta.url));

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined>,
  ms = 20_000,
): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

export async function linesIn(host: Host, path: string): Promise<string[]> {
  const text = await host.readFile(path);
  return text.split("\n").filter((l) => l.length > 0);
}

export interface Migrated {
  id: string;
  pid: number;
  mountpoint: string;
  criu: {
    origin: { version: string; source: string; pushedBytes: number };
    target: { version: string };
  };
  originKept: "stopped" | "killed";
  timeline: { freezeMs: number; imageBytes: number; firstFetchMs: number | null };
}

/** The CLI on host b against the origin sshd on host a, with a state directory of its own. */
export class LazyfsOnB {
  /** Per test process: test files running at the same time never share state. */
  readonly stateDir = `/var/lib/lazyfs-test-${process.pid}`;

  constructor(
    private readonly pair: HostPair,
    private readonly sshd: SshdHandle,
  ) {}

  /** `timeoutMs`: a drain of many trees on a loaded 2-core machine takes minutes. */
  run(args: string[], allowFailure = false, timeoutMs = 120_000) {
    return this.pair.b.exec(process.execPath, [CLI, ...args], {
      allowFailure,
      env: { ...process.env, LAZYFS_STATE_DIR: this.stateDir },
      timeoutMs,
    });
  }

  sshArgs(): string[] {
    return ["-i", this.sshd.identityFile, "--known-hosts", this.sshd.knownHostsFile];
  }

  migrateArgs(pid: number, extra: string[] = []): string[] {
    return [
      "migrate",
      "--from",
      `ssh://root@${this.pair.a.address}`,
      "--pid",
      String(pid),
      ...this.sshArgs(),
      "--json",
      ...extra,
    ];
  }

  async migrate(pid: number, extra: string[] = []): Promise<Migrated> {
    const r = await this.run(this.migrateArgs(pid, extra));
    return JSON.parse(r.stdout) as Migrated;
  }

  async status(id: string): Promise<DaemonStatus> {
    return (JSON.parse((await this.run(["status", id, "--json"])).stdout) as DaemonStatus[])[0]!;
  }

  /** Kills the restored process on b, stops its migration and deletes its state. */
  async stop(m: Migrated): Promise<void> {
    await this.pair.b.exec("kill", ["-KILL", String(m.pid)], { allowFailure: true });
    await this.run(["unmount", m.id, "--force", "--purge"], true);
  }

  async cleanUp(): Promise<void> {
    await this.run(["unmount", "--all", "--force"], true).catch(() => {});
    await this.pair.b.exec("rm", ["-rf", this.stateDir]).catch(() => {});
  }
}

/**
 * Nothing of a migration on b (state, mounts, LazyFS processes: daemons, a `migrate`) nor on
 * a (dump directories: with privateDevShm).
 */
export async function assertNothingLeft(pair: HostPair, lazyfs: LazyfsOnB): Promise<void> {
  const state = await pair.b.exec("sh", ["-c", `ls -A '${lazyfs.stateDir}' 2>/dev/null; true`]);
  assert.equal(state.stdout.trim(), "", "no migration state on the target");
  const mounts = await pair.b.exec("cat", ["/proc/self/mountinfo"]);
  assert.ok(!/ fuse\.lazyfs| \/lazyfs\//.test(mounts.stdout), "no LazyFS mount on the target");
  const procs = await pair.b.exec("sh", ["-c", "pgrep -af '[m]ain.js m' || true"]);
  assert.equal(procs.stdout.trim(), "", "no LazyFS process on the target");
  const dumps = await pair.a.exec("sh", ["-c", "ls -d /dev/shm/lazyfs-dump.* 2>/dev/null; true"]);
  assert.equal(dumps.stdout.trim(), "", "no dump directory on the origin");
}

/**
 * Gives host a a /dev/shm of its own, where `migrate` makes its dump directories: the
 * machine's is shared with every other test run, whose dump directories come and go there.
 * It goes with the host.
 */
export async function privateDevShm(pair: HostPair): Promise<void> {
  await pair.a.exec("mount", ["-t", "tmpfs", "-o", "mode=1777", "lazyfs-test-shm", "/dev/shm"]);
}

/** stderr lines of the CLI that are not log lines. */
export function errorLines(stderr: string): string[] {
  return stderr
    .trim()
    .split("\n")
    .filter((l) => l.length > 0 && !/^(warn|info|debug) /.test(l));
}

/**
 * Python prelude: `await_go()` returns once the process got SIGUSR1 (the test's "go" after a
 * migration: a signal reaches the restored process wherever its files are).
 */
export const AWAIT_GO =
  "import signal,time\n_go=[]\nsignal.signal(signal.SIGUSR1, lambda *a: _go.append(1))\ndef await_go():\n  while not _go: time.sleep(0.01)";

/**
 * Python: prints the lines of argv[1], argv[2] seconds apart; after the first `gate` lines it
 * waits for SIGUSR1 (the test's "go" once it runs on the target), so that it cannot finish
 * before the dump however slow a loaded machine is.
 */
export const gatedLineReader = (gate: number) => `${AWAIT_GO}
import sys
for i,line in enumerate(open(sys.argv[1])):
  sys.stdout.write(line); sys.stdout.flush()
  if i==${gate - 1}: await_go()
  time.sleep(float(sys.argv[2]))`;

/** The standby server a migration's supervisor keeps ready on `host` (its other child). */
export function standbyOf(
  host: Host,
  st: { supervisorPid: number | null; daemonPid: number },
): Promise<number> {
  assert.ok(st.supervisorPid, "a supervisor runs");
  return waitFor("the standby", async () => {
    const r = await host.exec("pgrep", ["-P", String(st.supervisorPid)], { allowFailure: true });
    return r.stdout
      .split("\n")
      .filter(Boolean)
      .map(Number)
      .find((k) => k !== st.daemonPid);
  });
}

/** A fresh pair of hosts (with a client host if asked) whose origin runs sshd. */
export async function startHosts(): Promise<{ pair: HostPair; lazyfs: LazyfsOnB }>;
export async function startHosts(opts: {
  client: true;
}): Promise<{ pair: ClientHostPair; lazyfs: LazyfsOnB }>;
export async function startHosts(opts: { client?: boolean } = {}) {
  await cleanupStaleHosts();
  const pair = opts.client ? await createHostPair({ client: true }) : await createHostPair();
  const sshd = await pair.startOriginSshd();
  return { pair, lazyfs: new LazyfsOnB(pair, sshd) };
}

/** Stops every migration of the suite and removes the hosts. */
export async function stopHosts(env: { pair?: HostPair; lazyfs?: LazyfsOnB }): Promise<void> {
  await env.lazyfs?.cleanUp();
  await env.pair?.destroy();
}
