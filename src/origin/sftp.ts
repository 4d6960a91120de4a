/**
 * SFTP origin over one SSH connection (ssh2), as a standard OpenSSH server offers it.
 *
 * - Authentication by identity file and/or ssh-agent (`SSH_AUTH_SOCK`).
 * - Host key checked against known_hosts; an unknown key is refused unless
 *   `acceptNewHostKey` (then it is appended), a changed or revoked key is always refused.
 * - A range read is split into requests of at most the server's read limit, all in flight at
 *   once on the same channel; file handles are kept open per path.
 * - Every request has a timeout; a dropped connection is re-established with exponential
 *   backoff and the request retried (see reconnect.ts: hard, soft or bounded retries).
 *   Failures are `UserError`s naming host and path.
 * - A read may carry a check (ReadCheck): the handle's attributes are fetched right behind
 *   the data (fstat, pipelined) and, when the file is opened on a connection, its exact
 *   identity (`stat`: inode, ctime, ns times) in a shell command; data is handed over only
 *   once the check passed.
 * - `retarget` moves the origin to another address: same host key (known for the old one),
 *   or one explicitly accepted.
 */
import { readFile, stat } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { Client, type ClientChannel, type ConnectConfig, type SFTPWrapper, type Stats } from "ssh2";
import { errorMessage, UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import { ExactStatBatcher } from "./exact-stat.js";
import {
  appendKnownHost,
  checkKnownHosts,
  fingerprint,
  type HostKeyVerdict,
  keyType,
  readKnownHosts,
} from "./knownhosts.js";
import { type LinkStatus, type OutagePolicy, Reconnector } from "./reconnect.js";
import { type ExecResult, execOnClient } from "./sftp-exec.js";
import { cb, readRange, toStat } from "./sftp-read.js";
import type { Origin, OriginDirEntry, OriginStat, ReadCheck, ReadPartCallback } from "./types.js";

const log = logger("origin/sftp");

export interface SftpOriginOptions {
  host: string;
  port?: number;
  username?: string;
  /** Private key file; when absent (or in addition) the ssh-agent at `agent` is used. */
  identityFile?: string;
  /** ssh-agent socket, default `$SSH_AUTH_SOCK`. */
  agent?: string;
  /** Default `~/.ssh/known_hosts`. */
  knownHostsFile?: string;
  /** Accept (and record) a host key never seen before. A changed key is still refused. */
  acceptNewHostKey?: boolean;
  /** Per-request timeout (and connect timeout), default 30 000 ms. */
  timeoutMs?: number;
  /** Reconnect attempts per request after a dropped connection, default 5. */
  maxRetries?: number;
  /** First backoff delay, doubled per attempt; default 200 ms. */
  backoffMs?: number;
  /** Size of one SFTP read request (all of a range's requests are in flight at once). */
  readChunkBytes?: number;
  /** What a request does while the origin is unreachable; default bounded `maxRetries`. */
  outage?: OutagePolicy;
}

/** ssh2 keeps the server's read limit private; OpenSSH allows 256 KiB minus overhead. */
const DEFAULT_READ_CHUNK = 254 * 1024;
const WRITE_CHUNK = 32 * 1024;
/** fastPut's write size and writes in flight (OpenSSH takes up to 256 KiB per message). */
const UPLOAD_CHUNK = 128 * 1024;
const UPLOAD_CONCURRENCY = 16;
/** Soft mode: how long a request after a long outage waits for the fresh attempt it starts. */
const FRESH_TRY_MS = 2000;

interface Connection {
  client: Client;
  sftp: SFTPWrapper;
  readHandles: Map<string, Promise<Buffer>>;
  writeHandles: Map<string, Promise<Buffer>>;
  /** Paths whose open handle was checked against their exact identity. */
  verified: Map<string, Promise<void>>;
  exactStats: ExactStatBatcher;
  /** The host key this connection was accepted with. */
  hostKey?: Buffer;
  closed: boolean;
}

class FatalError extends UserError {}

/** A check refused the data: not an outage, never retried. */
class CheckFailed extends Error {}

function isSftpStatus(err: unknown): boolean {
  return typeof (err as { code?: unknown })?.code === "number";
}

const SFTP_STATUS: Record<number, string> = {
  1: "EOF",
  2: "no such file",
  3: "permission denied",
  4: "failure",
  8: "operation unsupported",
};

export class SftpOrigin implements Origin {
  readonly mtimePrecisionMs = 1000;
  private readonly opts: Required<Omit<SftpOriginOptions, "identityFile" | "agent" | "outage">> &
    Pick<SftpOriginOptions, "identityFile" | "agent">;
  private readonly outage: OutagePolicy;
  private readonly keeper: Reconnector<Connection>;
  /** The host key of the last connection (what "the same host" means for `retarget`). */
  private lastHostKey?: Buffer;
  private closing = false;

  constructor(options: SftpOriginOptions) {
    this.opts = {
      port: 22,
      username: process.env.USER ?? "root",
      knownHostsFile: join(homedir(), ".ssh", "known_hosts"),
      acceptNewHostKey: false,
      timeoutMs: 30_000,
      maxRetries: 5,
      backoffMs: 200,
      readChunkBytes: DEFAULT_READ_CHUNK,
      agent: process.env.SSH_AUTH_SOCK,
      ...options,
    };
    this.outage = options.outage ?? { mode: "retries", maxRetries: this.opts.maxRetries };
    this.keeper = new Reconnector(
      () => this.openConnection(),
      {
        backoffMs: this.opts.backoffMs,
        maxBackoffMs: 10_000,
        persistent: this.outage.mode !== "retries",
        unreachableAfterMs:
          this.outage.mode === "soft" ? this.outage.timeoutMs : this.opts.timeoutMs,
        isFatal: (err) => err instanceof FatalError,
        dispose: (c) => {
          c.closed = true;
          c.client.end();
        },
      },
      this.addressName(this.opts.host, this.opts.port),
    );
  }

  private addressName(host: string, port: number): string {
    return `${this.opts.username}@${host}:${port}`;
  }

  get name(): string {
    return this.keeper.address;
  }

  /** The connection's state, known without asking the origin. */
  linkStatus(): LinkStatus {
    return this.keeper.status();
  }

  /** Opens the connection now (otherwise the first request does); surfaces auth/host-key errors. */
  async connect(): Promise<void> {
    await this.keeper.get(Number.POSITIVE_INFINITY, 0);
  }

  /**
   * Reaches the origin at `host:port` from now on. Its host key must be the origin's (the key
   * of the last connection, or one known_hosts lists for the current address), listed for the
   * new address, or `acceptFingerprint` (`SHA256:...`); it is then recorded in known_hosts for
   * the new address. Resolves once connected there; requests waiting go on there.
   */
  async retarget(host: string, port: number, acceptFingerprint?: string): Promise<void> {
    if (this.closing) throw new UserError(`${this.name}: origin is closed`);
    const knownText = await readKnownHosts(this.opts.knownHostsFile);
    const old = { host: this.opts.host, port: this.opts.port };
    const lastKey = this.lastHostKey;
    const trust = (key: Buffer): HostKeyVerdict | "accepted" => {
      const forNew = checkKnownHosts(knownText, host, port, key);
      if (forNew === "known") return "known";
      if (forNew === "revoked") return "revoked";
      if (lastKey?.equals(key)) return "accepted";
      if (checkKnownHosts(knownText, old.host, old.port, key) === "known") return "accepted";
      if (acceptFingerprint && fingerprint(key) === acceptFingerprint) return "accepted";
      return forNew;
    };
    const conn = await this.openConnection({ host, port, trust, record: true });
    this.opts.host = host;
    this.opts.port = port;
    const previous = this.keeper.retarget(
      () => this.openConnection(),
      this.addressName(host, port),
      conn,
    );
    if (previous && !previous.closed) {
      previous.closed = true;
      previous.client.destroy(); // requests stuck on it fail now and go to the new one
    }
    log.info("origin moved", { from: `${old.host}:${old.port}`, to: this.name });
  }

  private async openConnection(
    target: {
      host: string;
      port: number;
      trust?: (key: Buffer) => HostKeyVerdict | "accepted";
      record?: boolean;
    } = { host: this.opts.host, port: this.opts.port },
  ): Promise<Connection> {
    const { host, port } = target;
    const { knownHostsFile } = this.opts;
    const knownText = await readKnownHosts(knownHostsFile);
    const name = this.addressName(host, port);
    const config: ConnectConfig = {
      host,
      port,
      username: this.opts.username,
      readyTimeout: this.opts.timeoutMs,
      keepaliveInterval: 10_000,
      keepaliveCountMax: 3,
      algorithms: {
        cipher: ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr"],
      },
    };
    if (this.opts.identityFile) {
      try {
        config.privateKey = await readFile(this.opts.identityFile);
      } catch (err) {
        throw new FatalError(
          `${name}: cannot read identity file ${this.opts.identityFile}: ${errorMessage(err)}`,
        );
      }
    }
    if (this.opts.agent) config.agent = this.opts.agent;
    if (!config.privateKey && !config.agent) {
      throw new FatalError(`${name}: no identity file given and no ssh-agent (SSH_AUTH_SOCK)`);
    }
    let verdict: HostKeyVerdict | undefined;
    let newKey: Buffer | undefined;
    let seenKey: Buffer | undefined;
    config.hostVerifier = (key: Buffer) => {
      seenKey = key;
      const v = target.trust ? target.trust(key) : checkKnownHosts(knownText, host, port, key);
      if (v === "accepted") {
        verdict = "known";
        if (target.record) newKey = key;
        return true;
      }
      verdict = v;
      if (verdict === "unknown" && this.opts.acceptNewHostKey) {
        newKey = key;
        return true;
      }
      return verdict === "known";
    };
    const client = new Client();
    const conn = await new Promise<Connection>((resolve, reject) => {
      client.once("ready", () => {
        // Small requests and window updates must not wait for ACKs of earlier ones (Nagle).
        client.setNoDelay(true);
        client.sftp((err, sftp) => {
          if (err) {
            client.end();
            reject(new UserError(`${name}: SFTP subsystem refused: ${err.message}`));
            return;
          }
          resolve({
            client,
            sftp,
            readHandles: new Map(),
            writeHandles: new Map(),
            verified: new Map(),
            exactStats: new ExactStatBatcher(async (script) => {
              const r = await this.execOn(conn, script, this.opts.timeoutMs);
              return r.stdout;
            }),
            ...(seenKey ? { hostKey: seenKey } : {}),
            closed: false,
          });
        });
      });
      client.on("error", (err: Error & { level?: string }) => {
        if (verdict !== undefined && verdict !== "known" && !newKey && seenKey) {
          const fp = fingerprint(seenKey);
          const why =
            verdict === "unknown"
              ? target.trust
                ? `host key ${keyType(seenKey)} ${fp} is not the origin's (not known for ${this.opts.host}:${this.opts.port} nor ${host}:${port} in ${knownHostsFile}); accept it explicitly (--accept-host-key ${fp}) to trust it`
                : `unknown host key ${keyType(seenKey)} ${fp}, not in ${knownHostsFile} (accept it explicitly to trust it)`
              : verdict === "revoked"
                ? `host key ${fp} is revoked in ${knownHostsFile}`
                : `HOST KEY CHANGED: ${keyType(seenKey)} ${fp} does not match ${knownHostsFile}; refusing (possible man-in-the-middle)`;
          reject(new FatalError(`${name}: ${why}`));
        } else if (err.level === "client-authentication") {
          reject(new FatalError(`${name}: authentication failed (${err.message})`));
        } else {
          reject(new UserError(`${name}: cannot connect: ${err.message}`, { cause: err }));
        }
      });
      client.connect(config);
    });
    if (newKey) {
      await appendKnownHost(knownHostsFile, host, port, newKey);
      log.warn("accepted new host key", { host: name, fingerprint: fingerprint(newKey) });
    }
    if (seenKey) this.lastHostKey = seenKey;
    const drop = (err?: unknown) => {
      conn.closed = true;
      this.keeper.lost(conn, err ?? new Error("connection closed"));
    };
    client.on("close", () => drop());
    client.on("error", (err) => {
      log.warn("connection error", { host: name, error: err.message });
      drop(err);
    });
    return conn;
  }

  /** Runs one request with a timeout, reconnecting with backoff after a dropped connection. */
  private async request<T>(
    what: string,
    fn: (c: Connection) => Promise<T>,
    timeoutMs = this.opts.timeoutMs,
  ): Promise<T> {
    const policy = this.outage;
    // Soft: the origin may be given `timeoutMs` per request, and no more than that since it
    // went away (a request after a long outage fails at once; reconnecting goes on).
    // A request that finds the origin away and the reconnect loop waiting tries at once, and
    // gets a little time for that fresh attempt.
    const lostSince = this.keeper.lostSince() ?? Number.POSITIVE_INFINITY;
    const fresh = this.keeper.kick();
    const deadline =
      policy.mode === "soft"
        ? Math.max(
            Math.min(Date.now(), lostSince) + policy.timeoutMs,
            fresh ? Date.now() + Math.min(FRESH_TRY_MS, policy.timeoutMs) : 0,
          )
        : Number.POSITIVE_INFINITY;
    const maxFailures = policy.mode === "retries" ? policy.maxRetries : Number.POSITIVE_INFINITY;
    let delay = this.opts.backoffMs;
    for (let attempt = 0; ; attempt++) {
      let conn: Connection | undefined;
      let attemptStart = Date.now();
      try {
        conn = await this.keeper.get(deadline, maxFailures - attempt);
        attemptStart = Date.now();
        const left = Math.max(1, Math.min(timeoutMs, deadline - Date.now()));
        return await this.withTimeout(what, conn, fn(conn), left);
      } catch (err) {
        if (err instanceof CheckFailed) throw err.cause;
        if (err instanceof FatalError || this.closing) throw err;
        if (isSftpStatus(err)) {
          const code = (err as { code: number }).code;
          throw new UserError(`${this.name}: ${what}: ${SFTP_STATUS[code] ?? errorMessage(err)}`, {
            cause: err,
          });
        }
        if (Date.now() >= deadline) {
          throw new UserError(
            `${this.name}: ${what}: origin unreachable for ${policy.mode === "soft" ? policy.timeoutMs : 0} ms (${errorMessage(err)})`,
            { cause: err },
          );
        }
        if (!conn || attempt >= maxFailures) {
          throw err instanceof UserError
            ? err
            : new UserError(`${this.name}: ${what}: ${errorMessage(err)}`, { cause: err });
        }
        log.info("request failed; reconnecting", { host: this.name, what, attempt });
        if (!conn.closed) {
          conn.closed = true;
          conn.client.end();
        }
        this.keeper.lost(conn, err, attemptStart);
        // The keeper backs off between connection attempts; this spaces out requests that
        // fail on a connection that was made.
        if (attempt > 0) {
          await new Promise((r) => setTimeout(r, Math.min(delay, deadline - Date.now())));
          delay = Math.min(delay * 2, 10_000);
        }
      }
    }
  }

  private withTimeout<T>(
    what: string,
    conn: Connection,
    p: Promise<T>,
    timeoutMs: number,
  ): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        conn.closed = true;
        conn.client.end();
        reject(new UserError(`${this.name}: ${what}: no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      p.then(
        (v) => {
          clearTimeout(timer);
          resolve(v);
        },
        (e) => {
          clearTimeout(timer);
          reject(e);
        },
      );
    });
  }

  private handle(conn: Connection, path: string, write: boolean): Promise<Buffer> {
    const map = write ? conn.writeHandles : conn.readHandles;
    let h = map.get(path);
    if (!h) {
      h = new Promise<Buffer>((resolve, reject) =>
        conn.sftp.open(path, write ? "r+" : "r", cb(resolve, reject)),
      );
      map.set(path, h);
      h.catch(() => map.delete(path));
    }
    return h;
  }

  stat(path: string): Promise<OriginStat> {
    return this.request(`stat ${path}`, async (c) =>
      toStat(await new Promise<Stats>((res, rej) => c.sftp.stat(path, cb(res, rej)))),
    );
  }

  lstat(path: string): Promise<OriginStat> {
    return this.request(`lstat ${path}`, async (c) =>
      toStat(await new Promise<Stats>((res, rej) => c.sftp.lstat(path, cb(res, rej)))),
    );
  }

  readlink(path: string): Promise<string> {
    return this.request(
      `readlink ${path}`,
      (c) => new Promise<string>((res, rej) => c.sftp.readlink(path, cb(res, rej))),
    );
  }

  /**
   * Checks a handle just opened on `c` against the file's exact identity (one `stat` in a
   * shell, after the open: a path replaced in between shows as a different inode).
   */
  private verifyHandle(c: Connection, path: string, check: ReadCheck): Promise<void> {
    let v = c.verified.get(path);
    if (!v) {
      v = (async () => {
        const st = await c.exactStats.stat(path);
        if (!st) {
          const gone = new UserError(`${this.name}: stat ${path}: no such file`, {
            cause: { code: 2 },
          });
          throw new CheckFailed("gone", { cause: gone });
        }
        try {
          check(st);
        } catch (err) {
          throw new CheckFailed("check", { cause: err });
        }
      })();
      c.verified.set(path, v);
      v.catch(() => c.verified.delete(path));
    }
    return v;
  }

  read(
    path: string,
    offset: number,
    length: number,
    onPart?: ReadPartCallback,
    check?: ReadCheck,
  ): Promise<Buffer> {
    return this.request(`read ${path} @${offset}+${length}`, async (c) => {
      const handle = await this.handle(c, path, false);
      if (check) await this.verifyHandle(c, path, check);
      const verify = check
        ? (st: OriginStat) => {
            try {
              check(st);
            } catch (err) {
              throw new CheckFailed("check", { cause: err });
            }
          }
        : undefined;
      return readRange(c.sftp, handle, offset, length, this.opts.readChunkBytes, onPart, verify);
    });
  }

  readdir(path: string): Promise<OriginDirEntry[]> {
    return this.request(`readdir ${path}`, async (c) => {
      const list = await new Promise<{ filename: string; attrs: Stats }[]>((res, rej) =>
        c.sftp.readdir(path, cb(res, rej)),
      );
      return list.map((e) => ({ name: e.filename, stat: toStat(e.attrs) }));
    });
  }

  write(path: string, offset: number, data: Buffer): Promise<void> {
    return this.request(`write ${path} @${offset}+${data.length}`, async (c) => {
      const handle = await this.handle(c, path, true);
      const parts: Promise<void>[] = [];
      for (let pos = 0; pos < data.length; pos += WRITE_CHUNK) {
        const len = Math.min(WRITE_CHUNK, data.length - pos);
        parts.push(
          new Promise<void>((res, rej) =>
            c.sftp.write(handle, data, pos, len, offset + pos, (err) => (err ? rej(err) : res())),
          ),
        );
      }
      await Promise.all(parts);
    });
  }

  /**
   * Copies the local file `localPath` to `remotePath` (created or replaced, `mode` default
   * 0600) with many large SFTP writes in flight at once (ssh2's fastPut). Retried whole after
   * a dropped connection; the timeout covers the whole copy (default: the request timeout
   * plus one second per MiB). Resolves with the bytes sent.
   */
  async upload(
    localPath: string,
    remotePath: string,
    opts: { mode?: number; timeoutMs?: number } = {},
  ): Promise<number> {
    let size: number;
    try {
      size = (await stat(localPath)).size;
    } catch (err) {
      throw new UserError(`${this.name}: upload: cannot read ${localPath}: ${errorMessage(err)}`);
    }
    const timeoutMs = opts.timeoutMs ?? this.opts.timeoutMs + Math.ceil(size / 1048576) * 1000;
    await this.request(
      `upload ${localPath} to ${remotePath}`,
      (c) =>
        new Promise<void>((res, rej) =>
          c.sftp.fastPut(
            localPath,
            remotePath,
            { concurrency: UPLOAD_CONCURRENCY, chunkSize: UPLOAD_CHUNK, mode: opts.mode ?? 0o600 },
            (err) => (err ? rej(err) : res()),
          ),
        ),
      timeoutMs,
    );
    return size;
  }

  truncate(path: string, size: number): Promise<void> {
    return this.request(
      `truncate ${path} to ${size}`,
      (c) =>
        new Promise<void>((res, rej) =>
          c.sftp.setstat(path, { size }, (err) => (err ? rej(err) : res())),
        ),
    );
  }

  /**
   * Runs a shell command on the origin host over the same SSH connection (not an SFTP
   * request, and never retried: a command is not idempotent). Resolves with its exit code and
   * output; a dropped connection or `timeoutMs` (default 10 minutes) is a UserError.
   */
  async exec(
    command: string,
    opts: {
      timeoutMs?: number;
      /** Gets the channel once the command runs: write its stdin, watch its stdout. */
      onChannel?: (channel: ClientChannel) => void;
    } = {},
  ): Promise<ExecResult> {
    const conn = await this.request("connect", async (c) => c);
    return this.execOn(conn, command, opts.timeoutMs ?? 600_000, opts.onChannel);
  }

  private execOn(
    conn: Connection,
    command: string,
    timeoutMs: number,
    onChannel?: (channel: ClientChannel) => void,
  ): Promise<ExecResult> {
    return execOnClient(conn.client, this.name, command, timeoutMs, onChannel);
  }

  async close(): Promise<void> {
    this.closing = true;
    const c = this.keeper.close();
    if (!c) return;
    try {
      c.closed = true;
      // Resolve once the server has closed its side too (bounded: a dead link never answers).
      const closed = new Promise<void>((resolve) => {
        c.client.once("close", () => resolve());
        setTimeout(resolve, 2000).unref();
      });
      c.client.end();
      await closed;
    } catch {
      // never connected
    }
  }
}
