/**
 * CRIU's own options as a migration needs them: which half of each goes to `criu dump` and
 * which to `criu restore`. One table drives both, so a flag can never reach one side only by
 * mistake (CRIU refuses e.g. a restore without `--tcp-close` when the dump had it).
 */
import { UserError } from "../common/errors.js";
import { PID_NAMESPACE_MODES, type PidNamespaceMode } from "./pidns.js";

export interface CriuOptions {
  /** Checkpoint and restore established TCP connections (both sides). */
  tcpEstablished?: boolean;
  /** Do not dump established TCP connections; restore them closed (both sides). */
  tcpClose?: boolean;
  /** Dump and restore file locks (both sides). */
  fileLocks?: boolean;
  /** Allow connections to external unix sockets (both sides). */
  extUnixSk?: boolean;
  /** Allow link remaps of open, unlinked files (dump). */
  linkRemap?: boolean;
  /** Largest deleted-but-open file CRIU copies into its ghost images, bytes (dump). */
  ghostLimit?: number;
  /** Dump and restore the tree's cgroups: `true` for CRIU's default mode, or a mode name. */
  manageCgroups?: boolean | string;
  /** The tree has a controlling terminal (both sides). */
  shellJob?: boolean;
  /** How CRIU locks the network while TCP connections are frozen (dump; restore reads it). */
  networkLock?: NetworkLock;
  /** Restore into a new pid namespace: always, never, or when a pid is taken (auto, default). */
  pidNamespace?: PidNamespaceMode;
  /** Anything else, verbatim (`--criu-opt`). */
  extra?: { dump: string[]; restore: string[] };
}

export type NetworkLock = "iptables" | "nftables" | "skip";
const NETWORK_LOCKS: readonly NetworkLock[] = ["iptables", "nftables", "skip"];
const CGROUP_MODES = ["none", "props", "soft", "full", "strict", "ignore"];

type Phase = "dump" | "restore";

interface Rule {
  /** The CRIU flag. */
  flag: string;
  phases: readonly Phase[];
  /** The option's value as CRIU arguments, or undefined when it is off. */
  value(o: CriuOptions): string[] | undefined;
}

const BOTH: readonly Phase[] = ["dump", "restore"];
const flagIf =
  (key: keyof CriuOptions, flag: string) =>
  (o: CriuOptions): string[] | undefined =>
    o[key] ? [flag] : undefined;

const RULES: readonly Rule[] = [
  {
    flag: "--tcp-established",
    phases: BOTH,
    value: flagIf("tcpEstablished", "--tcp-established"),
  },
  { flag: "--tcp-close", phases: BOTH, value: flagIf("tcpClose", "--tcp-close") },
  { flag: "--file-locks", phases: BOTH, value: flagIf("fileLocks", "--file-locks") },
  { flag: "--ext-unix-sk", phases: BOTH, value: flagIf("extUnixSk", "--ext-unix-sk") },
  { flag: "--link-remap", phases: ["dump"], value: flagIf("linkRemap", "--link-remap") },
  {
    flag: "--ghost-limit",
    phases: ["dump"],
    value: (o) =>
      o.ghostLimit === undefined ? undefined : ["--ghost-limit", String(o.ghostLimit)],
  },
  {
    flag: "--manage-cgroups",
    phases: BOTH,
    value: (o) =>
      o.manageCgroups === undefined || o.manageCgroups === false
        ? undefined
        : o.manageCgroups === true
          ? ["--manage-cgroups"]
          : [`--manage-cgroups=${o.manageCgroups}`],
  },
  { flag: "--shell-job", phases: BOTH, value: flagIf("shellJob", "--shell-job") },
  {
    flag: "--network-lock",
    phases: ["dump"],
    value: (o) => (o.networkLock ? ["--network-lock", o.networkLock] : undefined),
  },
];

function argsFor(phase: Phase, o: CriuOptions): string[] {
  const out: string[] = [];
  for (const r of RULES) {
    if (!r.phases.includes(phase)) continue;
    const v = r.value(o);
    if (v) out.push(...v);
  }
  return [...out, ...(o.extra?.[phase] ?? [])];
}

/** Arguments for `criu dump` (after `-t PID -D DIR`). */
export function criuDumpArgs(o: CriuOptions): string[] {
  return argsFor("dump", o);
}

/** Arguments for `criu restore`. */
export function criuRestoreArgs(o: CriuOptions): string[] {
  return argsFor("restore", o);
}

/** CRIU arguments LazyFS sets itself; a pass-through option may not override them. */
const OWNED = new Set([
  "-t",
  "--tree",
  "-D",
  "--images-dir",
  "-o",
  "--log-file",
  "-d",
  "--restore-detached",
  "--pidfile",
  "-R",
  "--leave-running",
  "-s",
  "--leave-stopped",
  "-W",
  "--work-dir",
]);

/**
 * Adds one `--criu-opt` value: `--flag[=value]` goes to both sides, `dump:--flag` or
 * `restore:--flag` to one. A value may hold several words separated by spaces.
 */
export function addCriuOpt(extra: { dump: string[]; restore: string[] }, text: string): void {
  const m = /^(dump|restore):(.*)$/s.exec(text);
  const phases: readonly Phase[] = m ? [m[1] as Phase] : BOTH;
  const words = (m ? m[2]! : text).trim().split(/\s+/).filter(Boolean);
  if (words.length === 0 || !words[0]!.startsWith("-")) {
    throw new UserError(
      `--criu-opt ${JSON.stringify(text)}: expected a CRIU option such as --skip-in-flight, dump:--skip-in-flight or restore:--auto-dedup`,
    );
  }
  for (const w of words) {
    const name = w.split("=")[0]!;
    if (OWNED.has(name)) {
      throw new UserError(`--criu-opt ${JSON.stringify(text)}: LazyFS sets ${name} itself`);
    }
    const rule = RULES.find((r) => r.flag === name);
    if (rule) {
      throw new UserError(
        `--criu-opt ${JSON.stringify(text)}: use LazyFS's own ${rule.flag} option (it sends it to the right side)`,
      );
    }
  }
  for (const p of phases) extra[p].push(...words);
}

/** `--network-lock` value. */
export function parseNetworkLock(text: string): NetworkLock {
  if ((NETWORK_LOCKS as readonly string[]).includes(text)) return text as NetworkLock;
  throw new UserError(
    `--network-lock ${JSON.stringify(text)}: expected ${NETWORK_LOCKS.join(", ")}`,
  );
}

/** `--manage-cgroups [mode]` value (commander gives `true` without a mode). */
export function parseCgroupMode(v: boolean | string): boolean | string {
  if (v === true || v === false) return v;
  if (CGROUP_MODES.includes(v)) return v;
  throw new UserError(
    `--manage-cgroups ${JSON.stringify(v)}: expected one of ${CGROUP_MODES.join(", ")}`,
  );
}

/** `--pid-namespace always|never|auto`. */
export function parsePidNamespaceMode(text: string): PidNamespaceMode {
  const mode = PID_NAMESPACE_MODES.find((m) => m === text);
  if (!mode) {
    throw new UserError(
      `--pid-namespace ${JSON.stringify(text)}: not one of ${PID_NAMESPACE_MODES.join(", ")}`,
    );
  }
  return mode;
}
