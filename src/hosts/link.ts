/**
 * The veth link between the two hosts of a pair: shaping with a `tbf` qdisc on both ends,
 * byte counters from the veth statistics, and a timeline sampler.
 *
 * Counters are read from host a's `/proc/net/dev` (a process's /proc/net shows the statistics
 * of its own network namespace): a's transmitted bytes are `aToB`, a's received bytes `bToA`.
 * The sampler keeps a `sleep` inside a's network namespace and reads `/proc/<its pid>/net/dev`
 * directly, so a sample costs one file read, not a process start.
 */
import type { ChildProcess } from "node:child_process";
import { readFile, readlink, stat } from "node:fs/promises";
import { performance } from "node:perf_hooks";
import { UserError } from "../common/errors.js";
import type { Host } from "./host.js";
import { sleep } from "./state.js";

export interface LinkCounters {
  /** Bytes sent from host a to host b. */
  aToB: number;
  /** Bytes sent from host b to host a. */
  bToA: number;
}

/** Bytes since the sampler started, `tMs` ms after it started. */
export interface TrafficSample extends LinkCounters {
  tMs: number;
}

export interface QdiscInfo {
  /** `tbf` when shaped; `noqueue` (veth default) when not. */
  kind: string;
  /** Configured tbf rate, bits per second. */
  rateBitsPerSec?: number;
  /** Bytes that went through this qdisc so far. */
  bytes: number;
  packets: number;
  drops: number;
}

/** Minimum tbf bucket: at least one 64 KiB GSO packet, so that big segments are not split. */
const MIN_BURST_BYTES = 64 * 1024;
const TBF_LATENCY = "100ms";

export function parseNetDev(text: string, iface: string): { rx: number; tx: number } {
  for (const line of text.split("\n")) {
    const colon = line.indexOf(":");
    if (colon < 0 || line.slice(0, colon).trim() !== iface) continue;
    const f = line
      .slice(colon + 1)
      .trim()
      .split(/\s+/)
      .map(Number);
    return { rx: f[0]!, tx: f[8]! };
  }
  throw new Error(`hosts: no interface ${iface} in /proc/net/dev`);
}

export class Link {
  readonly a: Host;
  readonly b: Host;
  /** Current shaping, null when unlimited. */
  rateBitsPerSec: number | null = null;
  private readonly samplers = new Set<Sampler>();

  constructor(a: Host, b: Host) {
    this.a = a;
    this.b = b;
  }

  /** Shapes both directions to `rateBitsPerSec` with tbf, or removes shaping when null. */
  async shape(rateBitsPerSec: number | null): Promise<void> {
    if (rateBitsPerSec !== null && !(Number.isFinite(rateBitsPerSec) && rateBitsPerSec >= 8000)) {
      throw new UserError(`link rate must be at least 8000 bit/s, got ${rateBitsPerSec}`);
    }
    for (const host of [this.a, this.b]) {
      if (rateBitsPerSec === null) {
        const current = await this.qdisc(host);
        if (current.kind === "tbf") {
          await host.exec("tc", ["qdisc", "del", "dev", host.iface, "root"]);
        }
        continue;
      }
      const rate = Math.round(rateBitsPerSec);
      // Bucket of 10 ms at the rate, so short bursts do not exceed it by much.
      const burst = Math.max(MIN_BURST_BYTES, Math.ceil(rate / 8 / 100));
      await host.exec("tc", [
        "qdisc",
        "replace",
        "dev",
        host.iface,
        "root",
        "tbf",
        "rate",
        `${rate}bit`,
        "burst",
        `${burst}`,
        "latency",
        TBF_LATENCY,
      ]);
    }
    this.rateBitsPerSec = rateBitsPerSec === null ? null : Math.round(rateBitsPerSec);
  }

  /** The root qdisc on `host`'s end of the link, from `tc -j -s qdisc show`. */
  async qdisc(host: Host = this.a): Promise<QdiscInfo> {
    const { stdout } = await host.exec("tc", ["-j", "-s", "qdisc", "show", "dev", host.iface]);
    const list = JSON.parse(stdout) as Array<{
      kind: string;
      root?: boolean;
      bytes?: number;
      packets?: number;
      drops?: number;
      options?: { rate?: number };
    }>;
    const root = list.find((q) => q.root) ?? list[0];
    if (!root) throw new Error(`hosts: tc shows no qdisc on ${host.name} ${host.iface}`);
    return {
      kind: root.kind,
      ...(root.kind === "tbf" && root.options?.rate !== undefined
        ? { rateBitsPerSec: root.options.rate * 8 }
        : {}),
      bytes: root.bytes ?? 0,
      packets: root.packets ?? 0,
      drops: root.drops ?? 0,
    };
  }

  /** Total bytes each way since the link was created (veth statistics). */
  async counters(): Promise<LinkCounters> {
    const { stdout } = await this.a.exec("cat", ["/proc/net/dev"]);
    const { rx, tx } = parseNetDev(stdout, this.a.iface);
    return { aToB: tx, bToA: rx };
  }

  /** A sampler of the traffic timeline every `intervalMs` (call start(), then stop()). */
  sample(intervalMs = 100): Sampler {
    const sampler = new Sampler(this.a, intervalMs, (s) => this.samplers.delete(s));
    this.samplers.add(sampler);
    return sampler;
  }

  /** Stops every sampler still running (used by the pair's destroy()). */
  async stopSamplers(): Promise<void> {
    for (const s of [...this.samplers]) await s.stop().catch(() => {});
  }
}

export class Sampler {
  /** Samples so far: cumulative bytes since start(), first one at tMs 0. */
  readonly timeline: TrafficSample[] = [];
  private holder: ChildProcess | undefined;
  private timer: NodeJS.Timeout | undefined;
  private t0 = 0;
  private base = { rx: 0, tx: 0 };
  private busy = false;
  private stopped = false;

  constructor(
    private readonly host: Host,
    readonly intervalMs: number,
    private readonly onStop: (s: Sampler) => void,
  ) {}

  async start(): Promise<void> {
    if (this.holder) throw new Error("hosts: sampler already started");
    const want = `net:[${(await stat(this.host.netnsPath)).ino}]`;
    const holder = this.host.spawn("sleep", ["infinity"], { stdio: "ignore" });
    this.holder = holder;
    const pid = holder.pid;
    if (pid === undefined) throw new Error("hosts: cannot start the sampler's holder process");
    for (let i = 0; ; i++) {
      const ns = await readlink(`/proc/${pid}/ns/net`).catch(() => "");
      if (ns === want) break;
      if (i > 500 || holder.exitCode !== null) {
        holder.kill("SIGKILL");
        throw new Error(`hosts: sampler holder did not enter ${this.host.netns}`);
      }
      await sleep(2);
    }
    this.base = await this.read();
    this.t0 = performance.now();
    this.timeline.push({ tMs: 0, aToB: 0, bToA: 0 });
    this.timer = setInterval(() => void this.tick(), this.intervalMs);
  }

  /** Takes a last sample, ends sampling and returns the timeline. */
  async stop(): Promise<TrafficSample[]> {
    if (this.stopped) return this.timeline;
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    if (this.holder) {
      await this.tick(true).catch(() => {});
      this.holder.kill("SIGKILL");
    }
    this.onStop(this);
    return this.timeline;
  }

  private async read(): Promise<{ rx: number; tx: number }> {
    const pid = this.holder!.pid!;
    return parseNetDev(await readFile(`/proc/${pid}/net/dev`, "utf8"), this.host.iface);
  }

  private async tick(final = false): Promise<void> {
    if ((this.busy && !final) || (this.stopped && !final)) return;
    this.busy = true;
    try {
      const now = await this.read();
      const tMs = Math.round(performance.now() - this.t0);
      this.timeline.push({ tMs, aToB: now.tx - this.base.tx, bToA: now.rx - this.base.rx });
    } catch {
      // the holder was killed under us (teardown); the timeline ends here
    } finally {
      this.busy = false;
    }
  }
}
