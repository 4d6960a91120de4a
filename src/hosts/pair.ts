/**
 * Two simulated hosts on one machine, joined by a veth pair, and optionally a client host.
 *
 * Creation order matters for a complete teardown: the record is written first (so a crash at
 * any later step is cleaned by cleanupStaleHosts), then the mount namespaces (each a copy of
 * the root one with a private tmpfs on DATA_DIR, and with its copies of /run/netns and
 * STATE_ROOT pins detached so that they cannot keep any other namespace alive), then the
 * network namespaces, then the PID namespaces with their inits (init.ts), then the veths.
 * Teardown kills every process in any of the hosts' namespaces (killing an init kills its
 * whole PID namespace), unmounts the mount- and PID-namespace pins (the namespaces and their
 * tmpfs die with their last reference), deletes the network namespaces and the record.
 */
import { randomBytes } from "node:crypto";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import { type ClientPlan, clientPlan, joinClient, type ServiceAddress } from "./client.js";
import { Host } from "./host.js";
import { Link } from "./link.js";
import { connectHosts, quietNetns } from "./net.js";
import { runCommand } from "./run.js";
import { type SshdHandle, startSshd } from "./sshd.js";
import {
  DATA_DIR,
  isMountPoint,
  killProcessesIn,
  mntFile,
  NETNS_DIR,
  netnsFile,
  netnsName,
  nsInode,
  ownerAlive,
  type PairRecord,
  PREFIX,
  pairDir,
  pidnsFile,
  processStart,
  ROLES,
  STATE_ROOT,
} from "./state.js";

const log = logger("hosts");

export interface HostPairOptions {
  /** Pair id (letters, digits, dashes); the pair is called `lazyfs-<name>`. Default random. */
  name?: string;
  /** Shape the link to this rate (bits per second) from the start; default unlimited. */
  rateBitsPerSec?: number | null;
  /** Also make host c, the client, with its own links to a and b and a service address. */
  client?: boolean;
}

export interface HostPair {
  /** `lazyfs-<id>`. */
  readonly name: string;
  /** The origin (10.213.N.1). */
  readonly a: Host;
  /** The target (10.213.N.2). */
  readonly b: Host;
  /** The measured a<->b link. */
  readonly link: Link;
  /** The client (10.214.N.200), joined to a and b by links of its own; with `client: true`. */
  readonly c: Host | undefined;
  /** The service address S (10.214.N.100) that a and/or b hold; with `client: true`. */
  readonly serviceAddress: string | undefined;
  /** `host` (a or b) holds S (on its lo) from now on. */
  addServiceAddress(host: Host): Promise<void>;
  /** `host` no longer holds S (no error if it did not). */
  removeServiceAddress(host: Host): Promise<void>;
  /** c sends S to `host` (a or b) from now on, established connections included. */
  routeServiceTo(host: Host): Promise<void>;
  /** Starts a real sshd inside host a on `a.address` (port 22 by default). Stopped by destroy(). */
  startOriginSshd(opts?: { port?: number }): Promise<SshdHandle>;
  /**
   * Starts a real sshd inside any host of the pair on its address (b as the origin of a
   * chained migration to c, c as a third full host). Stopped by destroy().
   */
  startSshdOn(host: Host, opts?: { port?: number }): Promise<SshdHandle>;
  /** Removes everything the pair created. Idempotent; safe after a partial creation. */
  destroy(): Promise<void>;
}

/** A pair made with `client: true`. */
export interface ClientHostPair extends HostPair {
  readonly c: Host;
  readonly serviceAddress: string;
}

const MOUNT_NS_SETUP = `
set -e
mount -t tmpfs -o mode=0755 "$2" "$1"
# Each host has an identity file of its own (a whole-origin view keeps the target's).
mount --bind "$3" /etc/hostname
# Copies of netns pins in this namespace would keep those namespaces alive after 'ip netns del'.
umount -l ${NETNS_DIR} 2>/dev/null || true
for f in ${NETNS_DIR}/*; do umount -l "$f" 2>/dev/null || true; done
# Likewise the PID-namespace pins of other pairs (mount-namespace pins are never copied).
umount -l ${STATE_ROOT} 2>/dev/null || true
`;

/** Makes STATE_ROOT a private bind mount of itself (as ip-netns does for /run/netns). */
async function ensureStateRoot(): Promise<void> {
  await mkdir(STATE_ROOT, { recursive: true, mode: 0o755 });
  if (await isMountPoint(STATE_ROOT)) return;
  await runCommand(["mount", "--bind", STATE_ROOT, STATE_ROOT]);
  await runCommand(["mount", "--make-private", STATE_ROOT]);
}

async function readRecord(name: string): Promise<PairRecord | undefined> {
  try {
    return JSON.parse(await readFile(join(pairDir(name), "pair.json"), "utf8")) as PairRecord;
  } catch {
    return undefined;
  }
}

async function listPairDirs(): Promise<string[]> {
  try {
    return (await readdir(STATE_ROOT)).filter((n) => n.startsWith(PREFIX));
  } catch {
    return [];
  }
}

async function pickSubnet(): Promise<number> {
  const used = new Set<number>();
  for (const name of await listPairDirs()) {
    const rec = await readRecord(name);
    if (rec) used.add(rec.subnet);
  }
  const free = Array.from({ length: 254 }, (_, i) => i + 1).filter((n) => !used.has(n));
  if (free.length === 0) throw new UserError("hosts: all 254 subnets 10.213.N.0/24 are in use");
  return free[Math.floor(Math.random() * free.length)]!;
}

/** Deletes one network namespace after killing what runs in it; no error if absent. */
async function removeNetns(name: string): Promise<void> {
  const file = join(NETNS_DIR, name);
  const ino = await nsInode(file);
  if (ino !== undefined) await killProcessesIn(new Set([ino]));
  const res = await runCommand(["ip", "netns", "del", name], { allowFailure: true });
  if (res.code !== 0 && (await isMountPoint(file))) {
    throw new Error(`hosts: cannot delete netns ${name}: ${res.stderr.trim()}`);
  }
}

/** Everything teardown does, from the names alone (works for stale pairs too). */
async function destroyByName(name: string): Promise<void> {
  const inodes = new Set<number>();
  for (const role of ROLES) {
    for (const file of [mntFile(name, role), pidnsFile(name, role), netnsFile(name, role)]) {
      const ino = await nsInode(file);
      if (ino !== undefined) inodes.add(ino);
    }
  }
  const killed = await killProcessesIn(inodes);
  if (killed.length) log.debug("killed processes in host namespaces", { pair: name, killed });
  for (const role of ROLES) {
    for (const file of [mntFile(name, role), pidnsFile(name, role)]) {
      if (await isMountPoint(file)) await runCommand(["umount", file]);
    }
  }
  for (const role of ROLES) await removeNetns(netnsName(name, role));
  await rm(pairDir(name), { recursive: true, force: true });
}

class Pair implements HostPair {
  readonly a: Host;
  readonly b: Host;
  readonly c: Host | undefined;
  readonly link: Link;
  private readonly plan: ClientPlan;
  private service: ServiceAddress | undefined;
  private readonly sshds: SshdHandle[] = [];
  private destroyed: Promise<void> | undefined;

  constructor(
    readonly name: string,
    subnet: number,
    client: boolean,
  ) {
    this.a = new Host(name, "a", `10.213.${subnet}.1`);
    this.b = new Host(name, "b", `10.213.${subnet}.2`);
    this.plan = clientPlan(subnet);
    this.c = client ? new Host(name, "c", this.plan.client, "lo") : undefined;
    this.link = new Link(this.a, this.b);
  }

  get serviceAddress(): string | undefined {
    return this.c ? this.plan.service : undefined;
  }

  private hosts(): Host[] {
    return this.c ? [this.a, this.b, this.c] : [this.a, this.b];
  }

  async setUp(rateBitsPerSec: number | null): Promise<void> {
    await mkdir(DATA_DIR, { recursive: true });
    for (const host of this.hosts()) {
      await writeFile(host.mountNsPath, "");
      const hostname = host.mountNsPath.replace(/\.mnt$/, ".hostname");
      await writeFile(hostname, `${host.name}\n`);
      await runCommand(
        [
          "unshare",
          `--mount=${host.mountNsPath}`,
          "--propagation",
          "private",
          "sh",
          "-c",
          MOUNT_NS_SETUP,
          "sh",
          DATA_DIR,
          host.name,
          hostname,
        ],
        { label: `host ${host.name}` },
      );
    }
    for (const host of this.hosts()) {
      await runCommand(["ip", "netns", "add", host.netns], { label: `host ${host.name}` });
      await quietNetns(host);
    }
    for (const host of this.hosts()) {
      await writeFile(host.pidnsPath, "");
      await host.startInit();
    }
    await connectHosts(
      { host: this.a, iface: this.a.iface, address: this.a.address },
      { host: this.b, iface: this.b.iface, address: this.b.address },
      24,
    );
    if (this.c) this.service = await joinClient(this.a, this.b, this.c, this.plan);
    if (rateBitsPerSec !== null) await this.link.shape(rateBitsPerSec);
  }

  private serviceOrThrow(): ServiceAddress {
    if (!this.service) throw new Error(`hosts: ${this.name} has no client host (client: true)`);
    return this.service;
  }

  async addServiceAddress(host: Host): Promise<void> {
    await this.serviceOrThrow().add(host);
  }

  async removeServiceAddress(host: Host): Promise<void> {
    await this.serviceOrThrow().remove(host);
  }

  async routeServiceTo(host: Host): Promise<void> {
    await this.serviceOrThrow().routeTo(host);
  }

  startOriginSshd(opts: { port?: number } = {}): Promise<SshdHandle> {
    return this.startSshdOn(this.a, opts);
  }

  async startSshdOn(host: Host, opts: { port?: number } = {}): Promise<SshdHandle> {
    const sshd = await startSshd({
      address: host.address,
      port: opts.port ?? 22,
      commandPrefix: host.commandPrefix(),
    });
    this.sshds.push(sshd);
    return sshd;
  }

  destroy(): Promise<void> {
    this.destroyed ??= (async () => {
      await this.link.stopSamplers();
      for (const sshd of this.sshds.splice(0)) {
        await sshd.stop().catch((err) => log.warn("sshd stop failed", { err: String(err) }));
      }
      for (const host of this.hosts()) host.killChildren();
      await destroyByName(this.name);
    })();
    return this.destroyed;
  }
}

/**
 * Creates two hosts joined by a veth link (and the client host c with `client: true`); call
 * destroy() when done (also on failure).
 */
export async function createHostPair(
  opts: HostPairOptions & { client: true },
): Promise<ClientHostPair>;
export async function createHostPair(opts?: HostPairOptions): Promise<HostPair>;
export async function createHostPair(opts: HostPairOptions = {}): Promise<HostPair> {
  const id = opts.name ?? randomBytes(3).toString("hex");
  if (!/^[a-z0-9][a-z0-9-]{0,23}$/.test(id)) {
    throw new UserError(`host pair name must be 1-24 of [a-z0-9-], got "${id}"`);
  }
  const name = `${PREFIX}${id}`;
  await ensureStateRoot();
  const existing = await readRecord(name);
  if (existing && (await ownerAlive(existing))) {
    throw new UserError(`host pair ${name} already exists (owned by pid ${existing.ownerPid})`);
  }
  await destroyByName(name); // leftovers of a crashed run under the same name
  const record: PairRecord = {
    name,
    subnet: await pickSubnet(),
    ownerPid: process.pid,
    ownerStart: (await processStart(process.pid)) ?? "",
    createdAt: Date.now(),
  };
  await mkdir(pairDir(name), { recursive: true });
  await writeFile(join(pairDir(name), "pair.json"), `${JSON.stringify(record)}\n`);
  const pair = new Pair(name, record.subnet, opts.client ?? false);
  try {
    await pair.setUp(opts.rateBitsPerSec ?? null);
  } catch (err) {
    await pair.destroy().catch((e) => log.warn("teardown after failed setup", { err: String(e) }));
    throw err;
  }
  log.info("host pair ready", {
    pair: name,
    a: pair.a.address,
    b: pair.b.address,
    ...(pair.c ? { c: pair.c.address, service: pair.serviceAddress } : {}),
  });
  return pair;
}

/**
 * Removes pairs left by runs that crashed: every recorded pair whose owner process is gone
 * (or every pair when `all`), and any `lazyfs-*` netns without a record. Returns the names.
 */
export async function cleanupStaleHosts(opts: { all?: boolean } = {}): Promise<string[]> {
  const removed: string[] = [];
  for (const name of await listPairDirs()) {
    const rec = await readRecord(name);
    if (rec && !opts.all && (await ownerAlive(rec))) continue;
    await destroyByName(name);
    removed.push(name);
  }
  let orphans: string[] = [];
  try {
    orphans = (await readdir(NETNS_DIR)).filter((n) => /^lazyfs-.+-[abc]$/.test(n));
  } catch {
    // no /run/netns at all
  }
  const live = new Set(await listPairDirs());
  for (const ns of orphans) {
    if (live.has(ns.slice(0, -2))) continue;
    await removeNetns(ns);
    removed.push(ns);
  }
  if (removed.length) log.info("removed stale hosts", { removed });
  return removed;
}
