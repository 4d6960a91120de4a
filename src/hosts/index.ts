/**
 * Simulated hosts on one machine, for tests, `lazyfs demo` and the benchmarks. Each host is a
 * network namespace, a private mount namespace with its own tmpfs on DATA_DIR (so the target
 * cannot see the origin's files) and a PID namespace of its own (so it cannot see the other
 * hosts' processes either). Hosts a and b are joined by a veth pair (10.213.N.1/24 and .2/24,
 * addresses that exist only inside these namespaces); with `client: true` a third host c gets
 * a link of its own to each of them (client.ts). Everything is named `lazyfs-*` and recorded
 * under /run/lazyfs/hosts/ (a private bind mount of itself, left in place like /run/netns).
 *
 * PIDs: each host's PID namespace has an init (pid 1, init.ts) that lives as long as the host
 * and reaps its orphans: workloads, trees restored with `criu restore -d`, daemons started by
 * a command run in the host. A /proc for that namespace is mounted over the host's /proc, so
 * CRIU, ps and /proc/PID inside the host see the host's own pids. Each host's pids start from
 * a base (ns_last_pid written at start; pid_max 32768): a 1001+, b 14001+, c 23501+. A tree
 * started on a is thus free to restore with its pids on b and on c, even while the original
 * is kept stopped on a (criu dump --leave-stopped), and b's and c's own tools use higher pids.
 * Every pid the API takes or returns is a pid inside the host; kill it with `host.kill`, not
 * process.kill.
 *
 *   const pair = await createHostPair({ name?, rateBitsPerSec?, client? });   // try/finally
 *   await pair.destroy();   // kills every process in the hosts' namespaces, unmounts, deletes
 *   await cleanupStaleHosts({ all? });   // pairs whose owner process died (or all)
 *
 *   pair.a (origin) / pair.b (target) / pair.c (client, with `client: true`): Host {
 *     name ("lazyfs-<id>-a"), role, netns, netnsPath, mountNsPath, pidnsPath, pidBase,
 *     address, iface ("veth0"; c: "lo", where its address is),
 *     dataDir ("/srv/lazyfs-data": same path on all, each host sees its own tmpfs there),
 *     commandPrefix({ cwd? }): ["nsenter", "--net=..", "--mount=..", "--pid=..", "--",
 *                               "setpriv", "--pdeathsig", "KILL", "--"]
 *       (nsenter forks into the PID namespace; the command dies with it when it is killed),
 *     exec(cmd, args?, { input?, allowFailure?, cwd?, timeoutMs?, env? })
 *       -> { stdout, stderr, code }; throws CommandError on non-zero unless allowFailure,
 *     writeFile(path, data), readFile(path) -> string   (inside the host),
 *     spawn(cmd, args?, { stdio?, cwd?, env?, detached? }) -> ChildProcess (daemons),
 *     startWorkload(cmd, args, { stdout, stdin?, stderr?, cwd?, append?, env? })
 *       -> { pid (inside the host), exited (exit code, null if a signal ended it) }:
 *       new session, stdio on files inside the host, no other fd, child of the host's init,
 *     reaped(pid) -> { code, signal } once the init reaps that orphan (e.g. a restored tree),
 *     kill(pid, signal = "SIGKILL") -> boolean   (from inside; negative pid: process group),
 *     processState(pid) -> "R" | "S" | "T" | "Z" | ... | undefined,  pidAlive(pid) -> boolean,
 *     procPath(pid, file) -> a root-namespace path to the host's /proc/<pid>/<file>,
 *     readProcLink(pid, link) -> readlink /proc/<pid>/<link> inside the host,
 *   }
 *   pair.link: Link (a<->b only) {
 *     shape(bitsPerSec | null)      tbf on both veth ends (null: unshaped),
 *     qdisc(host?)                  root qdisc from `tc -j -s`: { kind, rateBitsPerSec, bytes },
 *     counters()                    { aToB, bToA } bytes from the veth statistics,
 *     sample(intervalMs = 100)      Sampler: start(); stop() -> [{ tMs, aToB, bToA }]
 *                                   (bytes since start; first entry { 0, 0, 0 }),
 *   }
 *   pair.serviceAddress             S (10.214.N.100) with `client: true`, else undefined;
 *   pair.addServiceAddress(host) / removeServiceAddress(host)   a or b holds S (on its lo),
 *   pair.routeServiceTo(host)       c sends S to a or b (none before the first call);
 *                                   c reaches a.address and b.address over its own links
 *   pair.startOriginSshd({ port? }) -> SshdHandle: real sshd inside a on a.address:22
 *   sendFiles(from, to, paths)    -> { bytes }: tar over TCP through the link, same paths
 *   plainCriuMigration({ from, to, pid, copyAfterDump?, imagesDir?, leaveStopped? })
 *     -> { restored: { pid, exited }, dumpMs, transferMs, restoreMs, freezeMs, transferBytes }
 *     the baseline: criu dump inside a, images over the link, criu restore -d inside b.
 *     dumpInHost(host, pid, dir, { leaveStopped? }) / restoreInHost / waitPidFree(host, pid)
 *     are its steps; CRIU facts in plain-migration.ts.
 */
export {
  type ExecOptions,
  Host,
  type HostSpawnOptions,
  type Workload,
  type WorkloadOptions,
} from "./host.js";
export type { ExitStatus } from "./init.js";
export { Link, type LinkCounters, type QdiscInfo, Sampler, type TrafficSample } from "./link.js";
export {
  type ClientHostPair,
  cleanupStaleHosts,
  createHostPair,
  type HostPair,
  type HostPairOptions,
} from "./pair.js";
export {
  type DumpOptions,
  dumpInHost,
  type PlainMigrationOptions,
  type PlainMigrationResult,
  plainCriuMigration,
  type RestoredProcess,
  restoreInHost,
  waitPidFree,
} from "./plain-migration.js";
export { CommandError, type RunResult } from "./run.js";
export { type SshdHandle, type SshdOptions, startSshd } from "./sshd.js";
export { CRIU_BIN, DATA_DIR, PID_BASE, STATE_ROOT } from "./state.js";
export { sendFiles, type TransferResult } from "./transfer.js";
