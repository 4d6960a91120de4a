/**
 * The daemon's control socket: one JSON request per connection, one JSON reply.
 * Requests: {op: "status"} (answered without asking the origin), {op: "serve"} (mount now,
 * for a daemon started with --await-plan), {op: "unmount", force: boolean} and
 * {op: "origin", url, acceptHostKey?}.
 */
import { readFileSync } from "node:fs";
import { rm } from "node:fs/promises";
import { createConnection, createServer, type Server } from "node:net";
import { dirname, join } from "node:path";
import { errnoCode, errorMessage, UserError } from "../common/errors.js";

export type ControlRequest =
  | { op: "status" }
  | { op: "serve" }
  | { op: "unmount"; force: boolean }
  /** Reach the origin at `url` from now on (lazyfs origin). */
  | { op: "origin"; url: string; acceptHostKey?: string };
export type ControlReply = { ok: true; data: unknown } | { ok: false; error: string };

export async function serveControl(
  socketPath: string,
  handle: (req: ControlRequest) => Promise<unknown>,
): Promise<Server> {
  await rm(socketPath, { force: true });
  const server = createServer((sock) => {
    let buf = "";
    sock.setEncoding("utf8");
    sock.on("data", (chunk) => {
      buf += chunk;
      const nl = buf.indexOf("\n");
      if (nl < 0) return;
      const line = buf.slice(0, nl);
      let reply: Promise<ControlReply>;
      try {
        const req = JSON.parse(line) as ControlRequest;
        reply = handle(req).then(
          (data) => ({ ok: true, data }) as ControlReply,
          (err) => ({ ok: false, error: errorMessage(err) }) as ControlReply,
        );
      } catch (err) {
        reply = Promise.resolve({ ok: false, error: `bad request: ${errorMessage(err)}` });
      }
      reply.then((r) => sock.end(`${JSON.stringify(r)}\n`));
    });
    sock.on("error", () => {});
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(socketPath, () => resolve());
  });
  return server;
}

/** Sends one request; UserError when no daemon answers. */
export function callControl(
  socketPath: string,
  req: ControlRequest,
  timeoutMs = 10_000,
): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const sock = createConnection(socketPath);
    let buf = "";
    const timer = setTimeout(() => {
      sock.destroy();
      reject(new UserError(`daemon at ${socketPath} did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
    sock.setEncoding("utf8");
    sock.on("connect", () => sock.write(`${JSON.stringify(req)}\n`));
    sock.on("data", (c) => {
      buf += c;
    });
    sock.on("end", () => {
      clearTimeout(timer);
      try {
        const r = JSON.parse(buf) as ControlReply;
        if (r.ok) resolve(r.data);
        else reject(new UserError(r.error));
      } catch {
        reject(new UserError(`daemon at ${socketPath} sent a malformed reply`));
      }
    });
    sock.on("error", (err) => {
      clearTimeout(timer);
      const code = errnoCode(err);
      reject(
        new UserError(
          code === "ENOENT" || code === "ECONNREFUSED"
            ? `no LazyFS daemon is running at ${socketPath}`
            : `daemon at ${socketPath}: ${errorMessage(err)}`,
        ),
      );
    });
  });
}

export interface UnmountReply {
  unmounted: string | null;
  holders: number;
  daemonPid: number;
  /** The supervisor that owns the mount (exits once the daemon unmounted); null: none. */
  supervisorPid: number | null;
}

/** Gone, or a zombie its parent has not reaped yet. */
function processGone(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) === "Z";
  } catch {
    return true;
  }
}

/** The supervisor of the migration whose control socket is `socketPath`, if one runs. */
function liveSupervisor(socketPath: string): number | undefined {
  try {
    const pid = Number(readFileSync(join(dirname(socketPath), "supervisor.pid"), "utf8"));
    return Number.isInteger(pid) && pid > 0 && !processGone(pid) ? pid : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Sends `req` to the daemon (each try answered within `timeoutMs`); while its supervisor is
 * restarting it (no daemon listens for a moment), waits for the new one, up to `waitMs`.
 */
export async function callDaemon(
  socketPath: string,
  req: ControlRequest,
  waitMs = 15_000,
  timeoutMs = 10_000,
): Promise<unknown> {
  const deadline = Date.now() + waitMs;
  for (;;) {
    try {
      return await callControl(socketPath, req, timeoutMs);
    } catch (err) {
      const down = err instanceof UserError && /no LazyFS daemon is running/.test(err.message);
      if (!down || Date.now() > deadline || !liveSupervisor(socketPath)) throw err;
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/**
 * Asks the daemon to unmount and returns once it and its supervisor have exited (the mount and
 * mount point are gone by then), killing them if they have not within `waitMs`.
 */
export async function stopDaemon(
  socketPath: string,
  opts: { force?: boolean; waitMs?: number } = {},
): Promise<UnmountReply> {
  const reply = (await callDaemon(socketPath, {
    op: "unmount",
    force: opts.force ?? true,
  })) as UnmountReply;
  const deadline = Date.now() + (opts.waitMs ?? 15_000);
  // The supervisor first: killed, it could not restart the daemon killed next.
  const pids = [reply.supervisorPid, reply.daemonPid].filter((p): p is number => !!p);
  while (pids.some((p) => !processGone(p))) {
    if (Date.now() > deadline) {
      for (const p of pids) if (!processGone(p)) process.kill(p, "SIGKILL");
      break;
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return reply;
}
