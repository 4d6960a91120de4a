/**
 * Whether a path really answers: statfs(2) on it (always a request to a FUSE server, never
 * answered from a cache) in a child process killed after a timeout, so that a caller never
 * hangs on a dead or stuck FUSE connection.
 */
import { spawn } from "node:child_process";

/** ok, or why not in a few words ("Transport endpoint is not connected", "no answer in 2 s"). */
export type Probe = { ok: true } | { ok: false; reason: string };

export function probePath(path: string, timeoutMs = 2000): Promise<Probe> {
  return new Promise((resolve) => {
    const child = spawn("stat", ["-f", "-c", "%t", path], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    let err = "";
    child.stderr.setEncoding("utf8");
    child.stderr.on("data", (d: string) => {
      err += d;
    });
    let timedOut = false;
    // SIGKILL: a FUSE request waits killably, so the child goes even on a stuck connection.
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill("SIGKILL");
    }, timeoutMs);
    child.on("error", (e) => {
      clearTimeout(timer);
      resolve({ ok: false, reason: e.message });
    });
    child.on("close", (code) => {
      clearTimeout(timer);
      if (code === 0) resolve({ ok: true });
      else if (timedOut) resolve({ ok: false, reason: `no answer within ${timeoutMs} ms` });
      else {
        // "stat: cannot read file system information for 'X': <reason>"
        const line = err.trim().split("\n").pop() ?? "";
        resolve({ ok: false, reason: line.slice(line.lastIndexOf(": ") + 2) || `exit ${code}` });
      }
    });
  });
}

/** A probe's reason meaning the FUSE connection behind the path is gone for good. */
export function deadConnection(p: Probe): boolean {
  return !p.ok && /not connected|aborted/i.test(p.reason);
}
