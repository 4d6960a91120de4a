/**
 * libuv's thread pool (fs calls, the passthrough's disk I/O) is sized once, from
 * UV_THREADPOOL_SIZE, when it first starts, which in an ES-module program happens while the
 * entry module is still loading. So the only reliable way to size it is from the environment
 * of the process: `ensureThreadPool` re-executes the current program with the variable set.
 * Device reads never use this pool (they run in worker threads), so this only matters for
 * how many disk operations a file system can have in flight.
 *
 * Call it first thing in an entry point: `if (ensureThreadPool(16)) return;` (the parent then
 * only waits for the child and exits with its status).
 */
import { spawnSync } from "node:child_process";

export function ensureThreadPool(size: number): boolean {
  const current = Number(process.env.UV_THREADPOOL_SIZE ?? 4);
  if (current >= size) return false;
  const r = spawnSync(process.execPath, [...process.execArgv, ...process.argv.slice(1)], {
    stdio: "inherit",
    env: { ...process.env, UV_THREADPOOL_SIZE: String(size) },
  });
  process.exitCode = r.status ?? 1;
  return true;
}
