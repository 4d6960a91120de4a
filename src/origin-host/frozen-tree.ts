/**
 * The dumped process tree as it waits on the origin. `criu dump --leave-stopped` leaves it
 * frozen there (and, with `--tcp-established`, its TCP sockets in repair mode behind CRIU's
 * network lock) until the target says whether its restore succeeded: then `end()` kills it,
 * or `resume()` lets it run on exactly where it stopped. Nothing is restored from images, so
 * files that changed on the origin meanwhile cannot stop it.
 */
import { readFile, readlink } from "node:fs/promises";
import { UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import { shq } from "../common/shell.js";
import type { NetworkLock } from "../criu/index.js";
import type { SftpOrigin } from "../origin/index.js";

const log = logger("origin-tree");

/** Which kernel and pid namespace a host's processes live in. */
export interface PidSpace {
  bootId: string;
  /** e.g. `pid:[4026531836]` */
  pidNs: string;
}

export async function localPidSpace(): Promise<PidSpace> {
  return {
    bootId: (await readFile("/proc/sys/kernel/random/boot_id", "utf8")).trim(),
    pidNs: await readlink("/proc/self/ns/pid"),
  };
}

export async function originPidSpace(origin: SftpOrigin): Promise<PidSpace | undefined> {
  const r = await origin.exec("cat /proc/sys/kernel/random/boot_id; readlink /proc/self/ns/pid");
  const [bootId, pidNs] = r.stdout.trim().split("\n");
  return r.code === 0 && bootId && pidNs ? { bootId, pidNs } : undefined;
}

/** Same kernel and same pid namespace: a stopped original would hold the pids CRIU needs. */
export function samePidSpace(a: PidSpace | undefined, b: PidSpace | undefined): boolean {
  return !!a && !!b && a.bootId === b.bootId && a.pidNs === b.pidNs;
}

/**
 * Takes every TCP socket of the given processes that is in repair mode out of it, the way
 * CRIU does when a dump fails: pidfd_getfd(2) (Linux >= 5.6; syscall numbers 434 and 438 are
 * the same on every architecture) gives this script a copy of each socket descriptor.
 * Perl, because perl-base is part of every Debian/Ubuntu system and the origin is promised
 * nothing but sshd.
 */
const UNREPAIR = String.raw`
use strict; use warnings;
my $n = 0;
for my $pid (@ARGV) {
  my $pfd = syscall(434, $pid + 0, 0);
  if ($pfd < 0) { print STDERR "pidfd_open $pid: $!\n"; next; }
  opendir(my $d, "/proc/$pid/fd") or next;
  for my $fdn (grep { /^\d+$/ } readdir($d)) {
    my $l = readlink("/proc/$pid/fd/$fdn") // next;
    next unless $l =~ /^socket:/;
    my $fd = syscall(438, $pfd, $fdn + 0, 0);
    next if $fd < 0;
    open(my $fh, "+<&=", $fd) or next;
    my $proto = getsockopt($fh, 1, 38);
    my $repair = getsockopt($fh, 6, 19);
    if (defined $proto && unpack("i", $proto) == 6 && defined $repair && unpack("i", $repair)) {
      if (setsockopt($fh, 6, 19, 0)) { $n++ } else { print STDERR "pid $pid fd $fdn: $!\n" }
    }
    close($fh);
  }
}
print "$n\n";
`;

/** Shell function: is process $1 there and not a zombie? */
const LIVE = `live() { s=$(sed -n 's/^State:[[:space:]]*\\(.\\).*/\\1/p' /proc/$1/status 2>/dev/null); [ -n "$s" ] && [ "$s" != Z ]; }`;

export interface NetworkLockInfo {
  method: NetworkLock;
  /** CRIU's dump run id: its nftables table is `inet CRIU-<id>`. */
  runId?: string;
  /** nft on the origin (the pushed CRIU bundle has one), else `nft` from PATH. */
  nftPath?: string;
}

export class OriginTree {
  constructor(
    private readonly origin: SftpOrigin,
    /** Root pid first, then every other process of the tree (as the origin sees them). */
    readonly pids: number[],
    /** Set when the dump froze TCP connections: their sockets are in repair mode. */
    private readonly lock?: NetworkLockInfo,
  ) {}

  /** The origin's processes of the tree that still exist (zombies excluded). */
  async alive(): Promise<number[]> {
    const r = await this.origin.exec(
      `${LIVE}; for p in ${this.pids.join(" ")}; do live $p && echo $p; done; true`,
    );
    return r.stdout.split("\n").filter(Boolean).map(Number);
  }

  /** The restore on the target succeeded: kill the frozen original, then lift the lock. */
  async end(): Promise<void> {
    const list = this.pids.join(" ");
    // Sockets still in repair mode close silently: the peers see nothing of the old copy.
    await this.origin.exec(
      `${LIVE}; kill -KILL ${list} 2>/dev/null; i=0; while [ $i -lt 200 ]; do n=0; for p in ${list}; do live $p && n=1; done; [ $n = 0 ] && break; sleep 0.05; i=$((i+1)); done`,
    );
    await this.releaseLock();
  }

  /**
   * The migration failed: let the original run on where it stopped. Throws with the reason
   * when some process of the tree could not be resumed.
   */
  async resume(): Promise<void> {
    const list = this.pids.join(" ");
    if (this.lock) {
      const r = await this.origin.exec(`perl -e ${shq(UNREPAIR)} ${list}`);
      if (r.code !== 0) {
        log.warn("could not take TCP sockets out of repair mode on the origin", {
          error: (r.stderr || r.stdout).trim(),
        });
      } else log.info("TCP sockets out of repair mode", { sockets: Number(r.stdout.trim()) });
      await this.releaseLock();
    }
    const r = await this.origin.exec(`kill -CONT ${list}`);
    if (r.code !== 0) log.warn("kill -CONT on the origin", { error: r.stderr.trim() });
  }

  private async releaseLock(): Promise<void> {
    const lock = this.lock;
    if (!lock || lock.method === "skip") return;
    let command: string;
    if (lock.method === "nftables") {
      if (!lock.runId) return;
      const nft = lock.nftPath ? shq(lock.nftPath) : "nft";
      command = `${nft} delete table inet ${shq(`CRIU-${lock.runId}`)}`;
    } else {
      // CRIU's per-connection rules are the only ones that match its mark 0xC114.
      command = `for t in iptables ip6tables; do command -v $t-save >/dev/null || continue; $t-save -t filter | sed -n 's/^-A \\(.*--mark 0xc114 -j DROP\\)$/\\1/p' | while read -r rule; do $t -w -t filter -D $rule; done; done`;
    }
    const r = await this.origin.exec(command);
    if (r.code !== 0) {
      log.warn("could not remove CRIU's network lock on the origin", {
        method: lock.method,
        error: (r.stderr || r.stdout).trim(),
      });
    }
  }
}

/** Every process of the tree rooted at `pid` on the origin, root first, from its /proc. */
export async function originTreePids(origin: SftpOrigin, pid: number): Promise<number[]> {
  const r = await origin.exec(
    `for s in /proc/[0-9]*/stat; do read -r line < "$s" 2>/dev/null || continue; p=\${line%% *}; rest=\${line##*) }; set -- $rest; echo "$p $2"; done`,
  );
  const children = new Map<number, number[]>();
  for (const l of r.stdout.split("\n")) {
    const [p, pp] = l.split(" ").map(Number);
    if (!p || pp === undefined) continue;
    children.set(pp, [...(children.get(pp) ?? []), p]);
  }
  const out: number[] = [];
  const walk = (p: number) => {
    out.push(p);
    for (const c of children.get(p) ?? []) walk(c);
  };
  walk(pid);
  return out;
}

/** The kernel's PF_KTHREAD in /proc/PID/stat's flags. */
const PF_KTHREAD = 0x00200000;

/** A user process on the origin, or a clear error naming what `pid` is instead. */
export async function checkOriginPid(origin: SftpOrigin, pid: number): Promise<void> {
  // The state and flags fields of /proc/PID/stat, after the command name (which may hold
  // spaces and parentheses).
  const r = await origin.exec(
    `s=$(cat /proc/${pid}/stat 2>/dev/null) || { echo missing; exit; }; set -- \${s##*') '}; echo "$1 $7"`,
  );
  const [state, flags] = r.stdout.trim().split(" ");
  const at = origin.name;
  if (state === "missing" || state === "X" || flags === undefined) {
    throw new UserError(`${at}: no process with pid ${pid} there`);
  }
  if (state === "Z") throw new UserError(`${at}: pid ${pid} is a zombie (exited, not reaped)`);
  if (pid === 1) {
    throw new UserError(
      `${at}: pid 1 is the host's init (of its pid namespace); it cannot be migrated: ending it there would end every process of that host`,
    );
  }
  if ((Number(flags) & PF_KTHREAD) !== 0) {
    throw new UserError(`${at}: pid ${pid} is a kernel thread; CRIU migrates user processes`);
  }
}
