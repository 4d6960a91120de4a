/**
 * Restoring a tree into a new pid namespace of its own (CRIU's `criu-ns` answer to "pid in
 * use"): the tree keeps its pids inside the namespace, and the host sees other ones.
 *
 * `unshare --pid` (no --fork) puts the children of the command it runs into a new pid
 * namespace; that command is a small Perl launcher (perl-base is part of every Debian). Its
 * first child is the namespace's pid 1, our init: it mounts /proc for that namespace (in a
 * private mount namespace, so nothing else sees it), runs `criu restore -d` as
 * its own child so the tree's root gets its original pid there, reports CRIU's exit status
 * to the launcher, and then stays as the namespace's reaper until the tree is gone (when pid
 * 1 of a namespace exits, the kernel kills everything in it). The launcher prints the init's
 * host pid and exits with CRIU's status, so the caller sees an ordinary `criu restore -d`.
 */
import { readdir, readFile, readlink } from "node:fs/promises";

/** How a restore deals with pid namespaces (`--pid-namespace`). */
export type PidNamespaceMode = "always" | "never" | "auto";
export const PID_NAMESPACE_MODES: readonly PidNamespaceMode[] = ["always", "never", "auto"];

/** The launcher's line with the init's host pid. */
const INIT_MARK = "lazyfs-pidns-init ";

// $ENV{LAZYFS_PIDNS_SETSID}: the init starts a session of its own (not with --shell-job, which
// needs the caller's terminal).
const LAUNCHER = `
use strict; use POSIX ();
pipe(my $r, my $w) or die "pipe: $!";
my $init = fork() // die "fork: $!";
if ($init == 0) {
  close $r;
  $0 = "lazyfs-pidns-init";
  POSIX::setsid() if $ENV{LAZYFS_PIDNS_SETSID};
  system("mount", "-t", "proc", "-o", "nosuid,nodev,noexec", "proc", "/proc") == 0
    or do { print $w "112\\n"; exit 112 };
  my $criu = fork() // do { print $w "113\\n"; exit 113 };
  if ($criu == 0) { close $w; exec(@ARGV) or exit 127 }
  waitpid($criu, 0);
  my $st = $?;
  my $rc = $st & 127 ? 128 + ($st & 127) : $st >> 8;
  print $w "$rc\\n"; close $w;
  exit $rc if $rc;
  open(STDIN, "<", "/dev/null"); open(STDOUT, ">", "/dev/null"); open(STDERR, ">", "/dev/null");
  chdir("/");
  1 while waitpid(-1, 0) > 0;
  exit 0;
}
close $w;
my $rc = <$r>;
print "${INIT_MARK}$init\\n";
exit(defined $rc ? $rc + 0 : 114);
`;

/**
 * The command prefix that runs `criu restore -d ...` inside a new pid namespace. A private
 * mount namespace of its own too (a copy of the caller's, binds included): the init's /proc
 * must never cover the host's.
 */
export function pidNamespacePrefix(): string[] {
  return ["unshare", "--mount", "--propagation", "private", "--pid", "--", "perl", "-e", LAUNCHER];
}

/** Environment for the launcher. */
export function pidNamespaceEnv(ownSession: boolean): Record<string, string> {
  return ownSession ? { LAZYFS_PIDNS_SETSID: "1" } : {};
}

/** The init's host pid from the launcher's output. */
export function initPidFrom(stdout: string): number | undefined {
  const line = stdout.split("\n").find((l) => l.startsWith(INIT_MARK));
  const pid = line ? Number.parseInt(line.slice(INIT_MARK.length), 10) : Number.NaN;
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

/** A process's pids from the outermost pid namespace to its own (`NSpid`), seen from here. */
export async function nsPids(pid: number): Promise<number[]> {
  const text = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
  const line = text.split("\n").find((l) => l.startsWith("NSpid:"));
  return line ? line.slice(6).trim().split(/\s+/).map(Number) : [];
}

/**
 * Host pid of each of `inner` (pids in the pid namespace whose init is `initPid`), found by
 * the `NSpid` of every process here; a pid with no process is left out.
 */
export async function hostPidsIn(
  initPid: number,
  inner: readonly number[],
): Promise<Map<number, number>> {
  const ns = await readlink(`/proc/${initPid}/ns/pid`).catch(() => undefined);
  const out = new Map<number, number>();
  if (!ns) return out;
  const want = new Set(inner);
  for (const name of await readdir("/proc")) {
    if (!/^\d+$/.test(name)) continue;
    const pids = await nsPids(Number(name));
    const last = pids[pids.length - 1];
    if (pids.length < 2 || last === undefined || !want.has(last)) continue;
    if ((await readlink(`/proc/${name}/ns/pid`).catch(() => "")) !== ns) continue;
    out.set(last, Number(name));
    if (out.size === want.size) break;
  }
  return out;
}
