/**
 * Two simulated hosts on one machine, for tests, `lazyfs demo` and the benchmarks. Each host
 * is a network namespace (veth pair between the two, 10.213.N.1/24 and .2/24, addresses that
 * exist only inside these namespaces) plus a private mount namespace with its own tmpfs on
 * DATA_DIR, so the target cannot see the origin's files. Everything is named `lazyfs-*` and
 * recorded under /run/lazyfs/hosts/ (a private bind mount of itself, left in place like
 * /run/netns).
 *
 *   const pair = await createHostPair({ name?, rateBitsPerSec? });   // try { ... } finally
 *   await pair.destroy();   // kills every process in the 4 namespaces, unmounts, deletes
 *   await cleanupStaleHosts({ all? });   // pairs whose owner process died (or all)
 *
 *   pair.a (origin) / pair.b (target): Host {
 *     name ("lazyfs-<id>-a"), netns, netnsPath, mountNsPath, address, iface ("veth0"),
 *     dataDir ("/srv/lazyfs-data": same path on both, each host sees its own tmpfs there),
 *     commandPrefix({ cwd? }): ["nsenter", "--net=/run/netns/<netns>", "--mount=<pin>", "--"],
 *     exec(cmd, args?, { input?, allowFailure?, cwd?, timeoutMs?, env? })
 *       -> { stdout, stderr, code }; throws CommandError on non-zero unless allowFailure,
 *     writeFile(path, data), readFile(path) -> string   (inside the host),
 *     spawn(cmd, args?, { stdio?, cwd?, env?, detached? }) -> ChildProcess (daemons),
 *     startWorkload(cmd, args, { stdout, stdin?, stderr?, cwd?, append?, env? })
 *       -> { pid, exited }: new session, stdio on files inside the host, no other fd,
 *   }
 *   pair.link: Link {
 *     shape(bitsPerSec | null)      tbf on both veth ends (null: unshaped),
 *     qdisc(host?)                  root qdisc from `tc -j -s`: { kind, rateBitsPerSec, bytes },
 *     counters()                    { aToB, bToA } bytes from the veth statistics,
 *     sample(intervalMs = 100)      Sampler: start(); stop() -> [{ tMs, aToB, bToA }]
 *                                   (bytes since start; first entry { 0, 0, 0 }),
 *   }
 *   pair.startOriginSshd({ port? }) -> SshdHandle: real sshd inside a on a.address:22
 *   sendFiles(from, to, paths)    -> { bytes }: tar over TCP through the link, same paths
 *   plainCriuMigration({ from, to, pid, copyAfterDump?, imagesDir? })
 *     -> { restored: { pid, exited }, dumpMs, transferMs, restoreMs, freezeMs, transferBytes }
 *     the baseline: criu dump inside a, images over the link, criu restore inside b.
 *     dumpInHost / restoreInHost / waitPidFree are its steps; CRIU flags in plain-migration.ts.
 */
export {
  type ExecOptions,
  Host,
  type HostSpawnOptions,
  type Workload,
  type WorkloadOptions,
} from "./host.js";
export { Link, type LinkCounters, type QdiscInfo, Sampler, type TrafficSample } from "./link.js";
export { cleanupStaleHosts, createHostPair, type HostPair, type HostPairOptions } from "./pair.js";
export {
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
export { CRIU_BIN, DATA_DIR, STATE_ROOT } from "./state.js";
export { sendFiles, type TransferResult } from "./transfer.js";
