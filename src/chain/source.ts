/**
 * Chained migration, the origin's side: is the process to migrate itself running on LazyFS
 * there (restored by an earlier migration A -> B, now moving on B -> C)? Then the origin's
 * migration state tells what C needs: where B serves the process's view (the mount and the
 * bind roots), its block store (which blocks B holds), and A's URL (where the rest is).
 *
 * Found over SSH with the origin's sshd only: the process's mount namespace is compared with
 * the `mountNs` (and pid) of every migration's `restored.json` under the origin's state
 * roots (`/var/lib/lazyfs` and `/var/lib/lazyfs-*`), then the manifest and the store's block
 * size are read over SFTP.
 */
import { UserError } from "../common/errors.js";
import { shq } from "../common/shell.js";
import type { ChainSource, Manifest } from "../migration/index.js";
import type { SftpOrigin } from "../origin/index.js";
import { DEFAULT_BLOCK_SIZE } from "../store/index.js";

export interface OriginProcessView {
  /** CRIU must run inside the process's mount namespace there (`nsenter -m`). */
  ownMountNs: boolean;
  /** When the process runs on LazyFS there: the migration it came with. */
  chain?: ChainSource;
  /**
   * The process lives in a pid namespace below the origin's (e.g. restored there by LazyFS
   * into one of its own): CRIU must dump it from inside (`nsenter -t INIT -p -m`), by its pid
   * there.
   */
  pidNamespace?: { initPid: number; nsPid: number };
}

/**
 * Prints `pidns INIT NSPID` when `pid` lives in a pid namespace below ours: the init is the
 * nearest ancestor that is pid 1 of that namespace (the reaper every orphan goes to).
 */
function pidNamespaceScript(pid: number): string {
  return [
    `s=$(grep '^NSpid:' /proc/${pid}/status) || exit 0`,
    "set -- $s",
    '[ "$#" -gt 2 ] || exit 0',
    "for x; do inner=$x; done",
    `ns=$(readlink /proc/${pid}/ns/pid); p=${pid}`,
    'while [ "$p" -gt 1 ]; do',
    '  p=$(sed -n "s/^PPid:[[:space:]]*//p" /proc/$p/status) || exit 0',
    '  [ -n "$p" ] && [ "$(readlink /proc/$p/ns/pid)" = "$ns" ] || exit 0',
    '  set -- $(grep "^NSpid:" /proc/$p/status); for x; do last=$x; done',
    '  [ "$last" = 1 ] && { echo "pidns $p $inner"; exit 0; }',
    "done",
  ].join("\n");
}

const DEFAULT_ROOTS = ["/var/lib/lazyfs", "/var/lib/lazyfs-*"];

/** Looks at the process on the origin: its mount namespace, and the LazyFS migration it is. */
export async function originProcessView(
  origin: SftpOrigin,
  pid: number,
  stateRoots: readonly string[] = DEFAULT_ROOTS,
): Promise<OriginProcessView> {
  const globs = stateRoots.map((r) => `${shq(r).replace(/\*/g, "'*'")}/*/restored.json`);
  const script = [
    `ns=$(readlink /proc/${pid}/ns/mnt) || exit 0`,
    'self=$(readlink /proc/self/ns/mnt); echo "ns $ns $self"',
    // LazyFS restores into a namespace of its own; namespace numbers are reused, so the pid
    // must match too.
    '[ "$ns" = "$self" ] && exit 0',
    `for f in ${globs.join(" ")}; do [ -f "$f" ] && grep -qF "\\"pid\\":${pid}," "$f" && grep -qF "\\"mountNs\\":\\"$ns\\"" "$f" && ! grep -qF "\\"detached\\":true" "$f" && echo "dir $(grep -o '"restoredMs":[0-9]*' "$f" | cut -d: -f2) \${f%/restored.json}"; done`,
    "true",
  ].join("\n");
  // One exec: the pid namespace part in a subshell of its own (it exits early).
  const r = await origin.exec(`(\n${pidNamespaceScript(pid)}\n)\n${script}`);
  const nsLine = r.stdout.split("\n").find((l) => l.startsWith("pidns "));
  const [initPid, nsPid] = (nsLine?.split(" ").slice(1) ?? []).map(Number);
  const pidNamespace = initPid && nsPid ? { pidNamespace: { initPid, nsPid } } : {};
  const lines = r.stdout.split("\n");
  const ns = lines.find((l) => l.startsWith("ns "))?.split(" ");
  if (!ns) return { ownMountNs: false, ...pidNamespace };
  const ownMountNs = ns[1] !== ns[2];
  const claims = lines
    .filter((l) => l.startsWith("dir "))
    .map((l) => {
      const [, ms, ...dir] = l.split(" ");
      return { restoredMs: Number(ms) || 0, dir: dir.join(" ") };
    })
    .sort((x, y) => y.restoredMs - x.restoredMs);
  if (claims.length === 0) return { ownMountNs, ...pidNamespace };
  // An ended migration whose process had the same pid and whose namespace number was reused
  // (the process migrated away and back) matches too: the newest restore is the live one.
  if (claims.length > 1 && claims[0]!.restoredMs === claims[1]!.restoredMs) {
    throw new UserError(
      `${origin.name}: pid ${pid} is claimed by more than one LazyFS migration there (${claims.map((c) => c.dir).join(", ")})`,
    );
  }
  const stateDir = claims[0]!.dir;
  let manifest: Manifest;
  try {
    const st = await origin.stat(`${stateDir}/manifest.json`);
    manifest = JSON.parse(
      (await origin.read(`${stateDir}/manifest.json`, 0, st.size)).toString("utf8"),
    ) as Manifest;
  } catch (err) {
    throw new UserError(
      `${origin.name}: pid ${pid} runs on LazyFS there, but its manifest ${stateDir}/manifest.json cannot be read: ${err instanceof Error ? err.message : String(err)}`,
    );
  }
  let blockSize = DEFAULT_BLOCK_SIZE;
  try {
    const path = `${manifest.cacheDir}/store.json`;
    const st = await origin.stat(path);
    const cfg = JSON.parse((await origin.read(path, 0, st.size)).toString("utf8")) as {
      blockSize?: number;
    };
    blockSize = cfg.blockSize ?? DEFAULT_BLOCK_SIZE;
  } catch {
    // a store not yet written: the default
  }
  return {
    ownMountNs,
    ...pidNamespace,
    chain: {
      firstOrigin: manifest.origin,
      id: manifest.id,
      stateDir,
      mountpoint: manifest.mountpoint,
      binds: manifest.binds ?? [],
      cacheDir: manifest.cacheDir,
      blockSize,
    },
  };
}
