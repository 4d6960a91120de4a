/**
 * Starting a migration's daemon: `lazyfs mount --id ID` as a detached process (its
 * supervisor, which runs the serving daemon), with the typed passphrases on its stdin, and
 * waiting until its control socket answers.
 */
import { spawn } from "node:child_process";
import { constants } from "node:fs";
import { fileURLToPath } from "node:url";
import { readTail } from "../common/bounded-read.js";
import { UserError } from "../common/errors.js";
import { openPrivate, writeFileAtomic } from "../common/private-files.js";
import { makeStateDir, migrationPaths } from "../migration/index.js";
import { callControl, callDaemon } from "./control.js";
import { secretsForChild } from "./secrets.js";
export const CLI_MAIN = fileURLToPath(new URL("../cli/main.js", import.meta.url));

/** A daemon process started for a migration, listening on its control socket. */
export interface DaemonHandle {
  id: string;
  /** Serves what the manifest holds now (files added since the daemon started). */
  serve(): Promise<void>;
}

/**
 * Starts `lazyfs mount --id ID` as a detached daemon (it mounts what the manifest holds) and
 * waits until its control socket answers; if it dies first, its last log line is the error.
 */
export async function startDaemon(
  id: string,
  opts: { timeoutMs?: number } = {},
): Promise<DaemonHandle> {
  const paths = migrationPaths(id);
  const timeoutMs = opts.timeoutMs ?? 30_000;
  await makeStateDir(paths);
  const logFh = await openPrivate(paths.log, constants.O_APPEND);
  const args = [CLI_MAIN, "mount", "--id", id];
  const secrets = secretsForChild();
  const child = spawn(process.execPath, args, {
    detached: true,
    stdio: [secrets.stdin, logFh.fd, logFh.fd],
    // Disk I/O of the block store runs on libuv's pool; FUSE device reads do not.
    env: {
      ...process.env,
      LAZYFS_LOG: process.env.LAZYFS_LOG ?? "info",
      UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? "16",
      ...secrets.env,
    },
  });
  secrets.send(child.stdin);
  await logFh.close();
  // The supervisor's pid, at once: a stop request that comes before its daemon listens then
  // waits for it (callDaemon) instead of leaving a mount behind.
  if (child.pid) {
    // Best effort: the state directory's disk may be full, and the daemon serves anyway.
    await writeFileAtomic(paths.supervisorPid, `${child.pid}\n`).catch(() => {});
  }
  let exited: string | undefined;
  child.on("exit", (code, signal) => {
    exited = signal ? `killed by ${signal}` : `exit code ${code}`;
  });
  child.unref();
  const failure = async () => {
    const tail = (await readTail(paths.log, 64 * 1024, "daemon log").catch(() => Buffer.alloc(0)))
      .toString("utf8")
      .trim()
      .split("\n");
    const last = tail.filter((l) => l.length > 0).slice(-1)[0] ?? "";
    return new UserError(`LazyFS daemon for ${id} failed (${exited}): ${last}`);
  };
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (exited) throw await failure();
    try {
      await callControl(paths.socket, { op: "status" }, 2000);
      break;
    } catch {
      // not yet listening
    }
    if (Date.now() > deadline) {
      child.kill("SIGTERM");
      throw new UserError(
        `LazyFS daemon for ${id} did not start within ${timeoutMs} ms (log: ${paths.log})`,
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    id,
    serve: async () => {
      try {
        // callDaemon: a daemon restarted by its supervisor meanwhile is waited for.
        await callDaemon(paths.socket, { op: "serve" }, timeoutMs, timeoutMs);
      } catch (err) {
        if (exited) throw await failure();
        throw err;
      }
    },
  };
}
