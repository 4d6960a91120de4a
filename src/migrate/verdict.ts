/**
 * The verdict on the origin's frozen original, and what surrounds it: the `--on-restored`
 * hook, ending the original once the restore here succeeded (originTree), or bringing it back
 * to running on the origin when it failed.
 */
import { spawn } from "node:child_process";
import { errorMessage, UserError } from "../common/errors.js";
import { shq } from "../common/shell.js";
import { type CriuOptions, loadDump, pidNamespacePrefix } from "../criu/index.js";
import type { SftpOrigin } from "../origin/index.js";
import { type OriginCriu, OriginTree, originTreePids } from "../origin-host/index.js";
import { type DumpedTree, dumpedTree } from "./restore.js";

/** Runs the `--on-restored` command with the migration's facts in its environment. */
export async function runOnRestored(command: string, env: Record<string, string>): Promise<void> {
  const child = spawn("sh", ["-c", command], {
    stdio: ["ignore", "inherit", "pipe"],
    env: { ...process.env, ...env },
  });
  let stderr = "";
  child.stderr.on("data", (d: Buffer) => {
    stderr += d.toString();
    process.stderr.write(d);
  });
  const code = await new Promise<number | null>((resolve) => {
    child.on("error", () => resolve(127));
    child.on("close", (c) => resolve(c));
  });
  if (code !== 0) {
    const tail = stderr.trim().split("\n").slice(-1)[0];
    throw new UserError(
      `--on-restored command failed (${code === null ? "killed" : `exit ${code}`})${tail ? `: ${tail}` : ""}`,
    );
  }
}

/** The dumped tree on the origin, as the images describe it, else from the origin's /proc. */
export async function originTree(
  origin: SftpOrigin,
  dumped: DumpedTree | undefined,
  rootPid: number,
  criu: CriuOptions,
  nftPath: string | undefined,
): Promise<OriginTree> {
  const pids = dumped?.processes ?? (await originTreePids(origin, rootPid));
  const runId = dumped?.criuRunId;
  const lock = criu.tcpEstablished
    ? {
        method: criu.networkLock ?? "iptables",
        ...(runId ? { runId } : {}),
        ...(nftPath ? { nftPath } : {}),
      }
    : undefined;
  return new OriginTree(origin, pids, lock);
}

/** A failed migration's dumped tree on the origin. */
export interface DumpedOnOrigin {
  origin: SftpOrigin;
  remoteDir: string;
  keepStopped: boolean;
  imagesDir: string;
  pid: number;
  /** The tree lived in a pid namespace below the origin's: the images name it by its pids there. */
  inPidNamespace?: boolean;
  criu: CriuOptions;
  originCriu: OriginCriu | undefined;
}

/** How a failed migration's process ended up on the origin. */
export interface BroughtBack {
  /** The tail of the error line saying so. */
  fate: string;
  /** The process lives only in its images on the origin: the dump directory must stay. */
  keepImages: boolean;
}

/**
 * Puts a dumped tree back to running on the origin after a failed migration: the frozen
 * original resumed (SIGCONT, its TCP sockets out of repair), or, when it had to end at the
 * dump, restored there from its images. Never throws: a failure is part of the answer.
 */
export async function bringBack(b: DumpedOnOrigin): Promise<BroughtBack> {
  const { origin, remoteDir, keepStopped } = b;
  try {
    if (keepStopped) return { fate: await resumeFrozen(b), keepImages: false };
    return await restoreBack(b);
  } catch (e) {
    return keepStopped
      ? {
          fate: `; resuming it on ${origin.name} failed too (${errorMessage(e)}): the process is stopped there, \`kill -CONT\` resumes it`,
          keepImages: false,
        }
      : {
          fate: `; restoring it back on ${origin.name} failed too (${errorMessage(e)}): its images are kept in ${remoteDir} there`,
          keepImages: true,
        };
  }
}

/** The frozen original resumed; returns the tail of the error line. */
async function resumeFrozen(b: DumpedOnOrigin): Promise<string> {
  const { origin, pid, originCriu } = b;
  // Without the images (their transfer failed), or when they name the tree by its pids in a
  // pid namespace of its own, the origin's /proc knows the tree.
  const dumped = b.inPidNamespace
    ? undefined
    : await loadDump(b.imagesDir).then(dumpedTree, () => undefined);
  const tree = await originTree(origin, dumped, pid, b.criu, originCriu?.nftPath);
  await tree.resume();
  const running = await tree.alive();
  if (running.length < tree.pids.length) {
    return `; only ${running.length} of its ${tree.pids.length} processes still exist on ${origin.name}`;
  }
  return `; the process runs on at ${origin.name} where it stopped`;
}

/** The original ended at the dump (its pids were needed here): restored from its images. */
async function restoreBack(b: DumpedOnOrigin): Promise<BroughtBack> {
  const { origin, remoteDir, pid, originCriu } = b;
  const wait = `i=0; while [ -e /proc/${pid} ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; `;
  const criu = originCriu?.path ?? "criu";
  const restore = [criu, "restore", "-d", "-D", remoteDir, "-o", "restore-back.log", "-v4"];
  // Its pids may be taken there meanwhile: a new pid namespace, as a restore here would do.
  const mode = b.criu.pidNamespace ?? "auto";
  const pids = await loadDump(b.imagesDir).then(
    (d) => d.tasks.flatMap((t) => [t.pid, ...t.threads]),
    () => [] as number[],
  );
  const taken = pids.map((p) => `[ -e /proc/${p} ]`).join(" || ") || "false";
  const plain = restore.map(shq).join(" ");
  const inNs = [...pidNamespacePrefix(), ...restore].map(shq).join(" ");
  const choose =
    mode === "never"
      ? plain
      : mode === "always"
        ? inNs
        : `if ${taken}; then ${inNs}; else ${plain}; fi`;
  const back = await origin.exec(wait + choose);
  return back.code === 0
    ? { fate: `; the process was restored back on ${origin.name}`, keepImages: false }
    : {
        fate: `; restoring it back on ${origin.name} failed too: its images are kept in ${remoteDir} there`,
        keepImages: true,
      };
}
