/** Options shared by mount, rewrite, restore and migrate, and their conversion. */
import { existsSync } from "node:fs";
import { dirname, resolve } from "node:path";
import type { Command } from "commander";
import { UserError } from "../common/errors.js";
import { normalizeAbsolute } from "../common/paths.js";
import { printable } from "../common/printable.js";
import { shq } from "../common/shell.js";
import {
  addCriuOpt,
  type CriuOptions,
  parseCgroupMode,
  parseNetworkLock,
  parsePidNamespaceMode,
} from "../criu/index.js";
import { parseListen } from "../daemon/index.js";
import type { PolicyRule } from "../fetch/index.js";
import { parseMaps, parsePolicyRules } from "../migrate/index.js";
import {
  type PathMap,
  parseBlockSize,
  parseDuration,
  parsePrefetch,
  parseRate,
  parseScrub,
  parseSize,
  parseView,
  type ServeOptions,
  type SshOptions,
  type View,
} from "../migration/index.js";

const collect = (v: string, prev: string[] = []) => [...prev, v];

export function addSshOptions(cmd: Command): Command {
  return cmd
    .option(
      "-i, --identity <file>",
      "SSH private key, tried first (as ssh -i); then ssh-agent and the configured identities",
    )
    .option("-F, --ssh-config <file>", "SSH configuration file (as ssh -F)")
    .option(
      "-o, --ssh-option <key=value>",
      "SSH option as for ssh -o, e.g. -o Port=2222 (repeatable)",
      collect,
    )
    .option(
      "--known-hosts <file>",
      "known_hosts file (default: the SSH configuration's UserKnownHostsFile)",
    )
    .option(
      "--accept-new-host-key",
      "trust and record an unknown origin host key (StrictHostKeyChecking accept-new)",
    )
    .option("--ssh-timeout <ms>", "timeout of every SSH request in ms", "30000");
}

export function addServeOptions(cmd: Command): Command {
  return cmd
    .option("--mountpoint <dir>", "where the files are served (default /lazyfs/<id>)")
    .option("--cache <dir>", "local block store (default /var/lib/lazyfs/<id>/cache)")
    .option(
      "--policy <glob=policy>",
      "per-path policy: lazy, eager, remote, scrub, local (repeatable; first match wins)",
      collect,
    )
    .option("--map <old=new>", "remap a path prefix on the target (repeatable)", collect)
    .option(
      "--lazy-dir <path>",
      "also serve this origin directory as a lazy mirror in the process's view (repeatable)",
      collect,
    )
    .option(
      "--view <view>",
      "what the process sees of the origin: dirs (the directories of its files; default) or whole (its whole file tree, except host paths)",
      "dirs",
    )
    .option(
      "--host-path <path>",
      "with --view whole, also keep this target path the target's own (repeatable)",
      collect,
    )
    .option("--prefetch <when>", "none, immediate, idle or delay:<ms>", "none")
    .option("--bwlimit <rate>", "cap origin traffic, e.g. 10M (bytes/s) or 100mbit")
    .option(
      "--scrub <content>",
      "content of scrub files: zeros, random[:SEED], module:PATH",
      "zeros",
    )
    .option(
      "--allow-changed",
      "serve files that changed on the origin since the checkpoint (from their new content)",
    )
    .option(
      "--origin-timeout <duration>",
      "soft: a read that needs an unreachable origin fails with EIO after this long, e.g. 5s, 2m (default: hard, wait for the origin)",
    )
    .option("--whole-file", "fetch a whole file on its first reference (the paper's scp behaviour)")
    .option(
      "--block-size <size>",
      "smallest fetch, a multiple of 4K up to 16M (default 64K; sequential reads fetch larger runs; an existing cache keeps its own)",
    )
    .option(
      "--criu <path>",
      "CRIU binary on this host (default: $LAZYFS_CRIU, /opt/lazyfs/criu, PATH)",
    )
    .option(
      "--access-log <file>",
      "record every request of the process to its files as JSON lines (read with lazyfs log ID)",
    )
    .option("--metrics <host:port>", "serve this migration's metrics (OpenMetrics) there");
}

/** CRIU's own options; each goes to the side(s) of dump and restore that need it. */
export function addCriuOptions(cmd: Command): Command {
  return cmd
    .option("--tcp-established", "migrate established TCP connections (peers keep them)")
    .option("--tcp-close", "do not migrate established TCP connections; restore them closed")
    .option("--file-locks", "migrate file locks (e.g. SQLite, flock users)")
    .option("--ext-unix-sk", "allow unix sockets connected to processes outside the tree")
    .option("--link-remap", "allow open files whose name was unlinked or is hard to reach")
    .option("--ghost-limit <size>", "largest deleted-but-open file CRIU copies, e.g. 64M")
    .option("--manage-cgroups [mode]", "migrate the tree's cgroups (CRIU modes: soft, full, ...)")
    .option(
      "--network-lock <method>",
      "how CRIU blocks frozen TCP connections: nftables (default with --tcp-established), iptables, skip",
    )
    .option("--shell-job", "the process tree uses a controlling terminal")
    .option(
      "--pid-namespace <when>",
      "restore into a new pid namespace of its own: auto (default: when a pid of the tree is taken here), always, never (refuse instead)",
      "auto",
    )
    .option(
      "--criu-opt <opt>",
      "any other CRIU option, for dump and restore; dump:OPT or restore:OPT for one side (repeatable; write --criu-opt=--flag)",
      collect,
    );
}

export interface CommonOpts {
  identity?: string;
  sshConfig?: string;
  sshOption?: string[];
  knownHosts?: string;
  acceptNewHostKey?: boolean;
  sshTimeout: string;
  mountpoint?: string;
  cache?: string;
  policy?: string[];
  map?: string[];
  lazyDir?: string[];
  view: string;
  hostPath?: string[];
  prefetch: string;
  bwlimit?: string;
  scrub: string;
  allowChanged?: boolean;
  originTimeout?: string;
  wholeFile?: boolean;
  blockSize?: string;
  criu?: string;
  accessLog?: string;
  metrics?: string;
}

export interface CriuOpts {
  tcpEstablished?: boolean;
  tcpClose?: boolean;
  fileLocks?: boolean;
  extUnixSk?: boolean;
  linkRemap?: boolean;
  ghostLimit?: string;
  manageCgroups?: boolean | string;
  networkLock?: string;
  shellJob?: boolean;
  pidNamespace?: string;
  criuOpt?: string[];
}

/** The CRIU options of a restore/migrate request. */
export function criuOptions(o: CriuOpts): CriuOptions {
  const extra = { dump: [] as string[], restore: [] as string[] };
  for (const t of o.criuOpt ?? []) addCriuOpt(extra, t);
  if (o.tcpEstablished && o.tcpClose) {
    throw new UserError("--tcp-established and --tcp-close exclude each other");
  }
  return {
    ...(o.tcpEstablished ? { tcpEstablished: true } : {}),
    ...(o.tcpClose ? { tcpClose: true } : {}),
    ...(o.fileLocks ? { fileLocks: true } : {}),
    ...(o.extUnixSk ? { extUnixSk: true } : {}),
    ...(o.linkRemap ? { linkRemap: true } : {}),
    ...(o.ghostLimit ? { ghostLimit: parseSize(o.ghostLimit, "--ghost-limit") } : {}),
    ...(o.manageCgroups !== undefined ? { manageCgroups: parseCgroupMode(o.manageCgroups) } : {}),
    ...(o.networkLock ? { networkLock: parseNetworkLock(o.networkLock) } : {}),
    ...(o.shellJob ? { shellJob: true } : {}),
    ...(o.pidNamespace ? { pidNamespace: parsePidNamespaceMode(o.pidNamespace) } : {}),
    extra,
  };
}

/** The largest pid_max Linux allows (PID_MAX_LIMIT on 64-bit). */
const PID_MAX_LIMIT = 4_194_304;

/** A process id given as `what` (`--pid`): decimal digits only, nothing else. */
export function parsePid(text: string, what: string, min = 1): number {
  const n = /^[0-9]{1,7}$/.test(text) ? Number(text) : Number.NaN;
  if (!(n >= min && n <= PID_MAX_LIMIT)) {
    throw new UserError(`${what} ${shq(printable(text))}: not a process id`);
  }
  return n;
}

export function positiveInt(text: string, what: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n <= 0)
    throw new UserError(`${what} ${text}: expected a positive integer`);
  return n;
}

export function sshOptions(o: CommonOpts): SshOptions {
  // Absolute: a daemon restarted later (`mount --id`) may run from another directory.
  return {
    ...(o.identity ? { identityFile: resolve(o.identity) } : {}),
    ...(o.sshConfig ? { configFile: resolve(o.sshConfig) } : {}),
    ...(o.sshOption?.length ? { options: o.sshOption } : {}),
    ...(o.knownHosts ? { knownHostsFile: resolve(o.knownHosts) } : {}),
    acceptNewHostKey: o.acceptNewHostKey ?? false,
    timeoutMs: positiveInt(o.sshTimeout, "--ssh-timeout"),
  };
}

export function serveOptions(o: CommonOpts): ServeOptions {
  return {
    prefetch: parsePrefetch(o.prefetch),
    ...(o.bwlimit ? { bwlimitBytesPerSec: parseRate(o.bwlimit) } : {}),
    allowChanged: o.allowChanged ?? false,
    ...(o.originTimeout
      ? { originTimeoutMs: parseDuration(o.originTimeout, "--origin-timeout") }
      : {}),
    ...(o.wholeFile ? { wholeFile: true } : {}),
    ...(o.blockSize ? { blockSize: parseBlockSize(o.blockSize) } : {}),
    scrub: parseScrub(o.scrub),
    ...(o.accessLog ? { accessLog: checkAccessLog(o.accessLog) } : {}),
    ...(o.metrics ? { metrics: checkListen(o.metrics) } : {}),
  };
}

/** The `--access-log` file as an absolute path; its directory must exist. */
function checkAccessLog(file: string): string {
  const abs = resolve(file);
  const dir = dirname(abs);
  if (!existsSync(dir)) throw new UserError(`--access-log ${file}: no directory ${dir}`);
  return abs;
}

/** A `--metrics` address, checked now rather than when the daemon starts. */
function checkListen(addr: string): string {
  parseListen(addr, "--metrics");
  return addr;
}

export function rules(o: CommonOpts): {
  policies: PolicyRule[];
  maps: PathMap[];
  lazyDirs?: string[];
  view: View;
  hostPaths?: string[];
} {
  const lazyDirs = (o.lazyDir ?? []).map((d) => absoluteDir(d, "--lazy-dir")!);
  const view = parseView(o.view ?? "dirs");
  const hostPaths = (o.hostPath ?? []).map((d) => absoluteDir(d, "--host-path")!);
  if (hostPaths.includes("/")) throw new UserError("--host-path /: the view would be empty");
  if (hostPaths.length > 0 && view !== "whole") {
    throw new UserError("--host-path needs --view whole");
  }
  return {
    policies: parsePolicyRules(o.policy ?? []),
    maps: parseMaps(o.map ?? []),
    ...(lazyDirs.length > 0 ? { lazyDirs } : {}),
    view,
    ...(hostPaths.length > 0 ? { hostPaths } : {}),
  };
}

export function absoluteDir(p: string | undefined, what: string): string | undefined {
  if (p === undefined) return undefined;
  if (!p.startsWith("/")) throw new UserError(`${what} ${p}: must be an absolute path`);
  return normalizeAbsolute(p); // `.`/`..` resolved: `/srv/../etc` is `/etc`, as in dump paths
}

export function addCommonOptions(cmd: Command): Command {
  return addServeOptions(addSshOptions(cmd));
}

/** The parts of a restore/mount/migrate request that come from the shared options. */
export function commonRequest(o: CommonOpts) {
  const mountpoint = absoluteDir(o.mountpoint, "--mountpoint");
  const cacheDir = absoluteDir(o.cache, "--cache");
  return {
    ssh: sshOptions(o),
    serve: serveOptions(o),
    ...rules(o),
    ...(mountpoint ? { mountpoint } : {}),
    ...(cacheDir ? { cacheDir } : {}),
    ...(o.criu ? { criuPath: o.criu } : {}),
  };
}
