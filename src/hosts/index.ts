/**
 * Two simulated hosts on one machine, for tests, `lazyfs demo` and the benchmarks.
 *
 *   const pair = await createHostPair({ name?, rateBitsPerSec? });
 *   pair.a / pair.b: Host {
 *     name, netns, address (10.213.N.1 / .2, only inside these namespaces), iface ("veth0"),
 *     dataDir ("/srv/lazyfs-data": each host sees its own tmpfs there),
 *     commandPrefix(): ["nsenter", "--net=/run/netns/<netns>", "--mount=<ns pin>", "--"],
 *     exec(cmd, args, { input?, allowFailure?, cwd?, timeoutMs? }) -> { stdout, stderr, code },
 *     spawn(cmd, args, { stdio?, cwd?, env?, detached? }) -> ChildProcess (daemons),
 *     startWorkload(cmd, args, { stdout, stdin?, stderr?, cwd?, append? }) -> { pid, exited },
 *   }
 *   pair.link: Link { shape(bitsPerSec | null), qdisc(host?), counters() -> { aToB, bToA },
 *                     sample(intervalMs = 100) -> Sampler { start(), stop() -> timeline } }
 *   pair.startOriginSshd({ port? }) -> SshdHandle (real sshd in host a, default port 22)
 *   sendFiles(from, to, paths) -> { bytes }       (tar over TCP through the link)
 *   plainCriuMigration({ from, to, pid, ... })   (baseline: CRIU dump in a, copy, restore in b)
 *   await pair.destroy();  cleanupStaleHosts()    (everything is named lazyfs-*)
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
