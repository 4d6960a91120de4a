/** Test helpers: what a pair leaves on the machine, and polling without timed assertions. */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { readdir, readFile, stat } from "node:fs/promises";
import type { HostPair } from "../../src/hosts/index.js";
import { processesIn, STATE_ROOT } from "../../src/hosts/state.js";

export interface PairTrace {
  name: string;
  /** Inodes of the hosts' network, mount and PID namespaces. */
  inodes: Set<number>;
}

export async function tracePair(pair: HostPair): Promise<PairTrace> {
  const inodes = new Set<number>();
  for (const h of [pair.a, pair.b, ...(pair.c ? [pair.c] : [])]) {
    for (const file of [h.netnsPath, h.mountNsPath, h.pidnsPath]) {
      inodes.add((await stat(file)).ino);
    }
  }
  return { name: pair.name, inodes };
}

/** Nothing of the pair is left: no netns, no record, no mount, no process in its namespaces. */
export async function assertNothingLeft(trace: PairTrace): Promise<void> {
  const netns = existsSync("/run/netns") ? await readdir("/run/netns") : [];
  assert.deepEqual(
    netns.filter((n) => n.startsWith(trace.name)),
    [],
    "network namespaces left",
  );
  assert.equal(existsSync(`${STATE_ROOT}/${trace.name}`), false, "state directory left");
  const mounts = await readFile("/proc/self/mountinfo", "utf8");
  assert.equal(mounts.includes(trace.name), false, "mounts left");
  assert.deepEqual(await processesIn(trace.inodes), [], "processes left in host namespaces");
}

/** Polls `probe` until it returns a value (not undefined); fails after `timeoutMs`. */
export async function eventually<T>(
  what: string,
  probe: () => Promise<T | undefined>,
  timeoutMs = 20_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}
