/**
 * SFTP origin over one SSH connection (ssh2), as a standard OpenSSH server offers it.
 *
 * - The destination is resolved as OpenSSH resolves it (`ssh -G`, ssh-config.ts): identities
 *   (agent, then identity files), known_hosts and StrictHostKeyChecking, ProxyJump,
 *   ConnectTimeout and ServerAliveInterval come from the user's SSH configuration.
 * - A range read is split into requests of at most the server's read limit, all in flight at
 *   once on the same channel; file handles are kept open per path.
 * - Every request has a timeout; a dropped connection is re-established with exponential
 *   backoff and the request retried. Failures are `UserError`s naming host and path.
 */
import { stat } from "node:fs/promises";
import type { Client, ClientChannel, SFTPWrapper, Stats } from "ssh2";
import { errorMessage, UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import { OriginHealth } from "./health.js";
import { sshChainFor } from "./ssh-chain.js";
import type { SshConfig } from "./ssh-config.js";
import { connectSshChain, SshRefusedError } from "./ssh-connect.js";
import {
  isNotFound,
  type Origin,
  type OriginDirEntry,
  type OriginStat,
  type ReadPartCallback,
} from "./types.js";

const log = logger("origin/sftp");

export interface SftpOriginOptions {
  /**
   * The destination as typed for `ssh` (host, user@host, Host alias, ssh://user@host:port);
   * default `ssh://username@host:port` from the fields below.
   */
  destination?: string;
  /** `ssh -F FILE`. */
  sshConfigFile?: string;
  /** `ssh -o KEY=VALUE` options, in order. */
  sshOptions?: string[];
  host: string;
  port?: number;
  username?: string;
  /** Private key file, tried first (`ssh -i`); then the agent and the configured ones. */
  identityFile?: string;
  /** ssh-agent socket (`-o IdentityAgent`); present but undefined: no agent. */
  agent?: string;
  /** Replaces UserKnownHostsFile (default: the SSH configuration's, ~/.ssh/known_hosts). */
  knownHostsFile?: string;
  /** Accept (and record) a host key never seen before (StrictHostKeyChecking accept-new). */
  acceptNewHostKey?: boolean;
  /** Per-request timeout (and connect timeout), default 30 000 ms. */
  timeoutMs?: number;
  /** Reconnect attempts per request after a dropped connection, default 5. */
  maxRetries?: number;
  /** First backoff delay, doubled per attempt; default 200 ms. */
  backoffMs?: number;
  /** Size of one SFTP read request (all of a range's requests are in flight at once). */
  readChunkBytes?: number;
}

/** ssh2 keeps the server's read limit private; OpenSSH allows 256 KiB minus overhead. */
const DEFAULT_READ_CHUNK = 254 * 1024;
const WRITE_CHUNK = 32 * 1024;
/** fastPut's write size and writes in flight (OpenSSH takes up to 256 KiB per message). */
const UPLOAD_CHUNK = 128 * 1024;
const UPLOAD_CONCURRENCY = 16;

interface Connection {
  client: Client;
  sftp: SFTPWrapper;
  readHandles: Map<string, Promise<Buffer>>;
  writeHandles: Map<string, Promise<Buffer>>;
  closed: boolean;
}

class FatalError extends UserError {}

function toStat(s: Stats): OriginStat {
  return {
    size: s.size,
    mtimeMs: s.mtime * 1000,
    mode: s.mode,
    uid: s.uid,
    gid: s.gid,
    isDirectory: s.isDirectory(),
    atimeMs: s.atime * 1000,
  };
}

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

function cb<T>(resolve: (v: T) => void, reject: (e: unknown) => void) {
  return (err: Error | null | undefined, value: T) => (err ? reject(err) : resolve(value));
}

export class SftpOrigin implements Origin {
  readonly name: string;
  readonly mtimePrecisionMs = 1000;
  private readonly opts: Required<
    Omit<
      SftpOriginOptions,
      "identityFile" | "agent" | "destination" | "sshConfigFile" | "sshOptions" | "knownHostsFile"
    >
  > &
    Pick<
      SftpOriginOptions,
      "identityFile" | "agent" | "destination" | "sshConfigFile" | "sshOptions" | "knownHostsFile"
    >;
  private readonly noAgent: boolean;
  /** The connection chain (`ssh -G` of the destination and its jump hosts), once resolved. */
  private route?: Promise<SshConfig[]>;
  private conn?: Promise<Connection>;
  private closing = false;
  /** Connections, reconnects, failed requests and state, for status and metrics. */
  readonly health = new OriginHealth();

  constructor(options: SftpOriginOptions) {
    this.opts = {
      port: 22,
      username: process.env.USER ?? "root",
      acceptNewHostKey: false,
      timeoutMs: 30_000,
      maxRetries: 5,
      backoffMs: 200,
      readChunkBytes: DEFAULT_READ_CHUNK,
      ...options,
    };
    this.noAgent = "agent" in options && !options.agent;
    // As typed, except a full ssh:// URL: `user@host:port` as before.
    const typed = options.destination;
    this.name =
      typed && !(typed.startsWith("ssh://") && options.username)
        ? typed.replace(/^ssh:\/\//, "").replace(/\/$/, "")
        : `${this.opts.username}@${this.opts.host}:${this.opts.port}`;
  }

  /** Opens the connection now (otherwise the first request does); surfaces auth/host-key errors. */
  async connect(): Promise<void> {
    await this.connection();
  }

  private connection(): Promise<Connection> {
    if (this.closing) return Promise.reject(new UserError(`${this.name}: origin is closed`));
    if (!this.conn) {
      this.health.connecting();
      const p = this.openConnection();
      this.conn = p;
      p.then(
        () => this.health.connected(),
        (err) => {
          this.health.error(errorMessage(err));
          this.health.dropped();
          if (this.conn === p) this.conn = undefined;
        },
      );
    }
    return this.conn;
  }

  private async openConnection(): Promise<Connection> {
    const route = this.route ?? sshChainFor(this.opts, this.noAgent);
    this.route = route;
    route.catch(() => {
      if (this.route === route) this.route = undefined;
    });
    let chain: SshConfig[];
    try {
      chain = await route;
    } catch (err) {
      // An invalid destination or SSH configuration: retrying cannot help.
      throw err instanceof UserError ? new FatalError(err.message) : err;
    }
    let client: Client;
    try {
      client = await connectSshChain(chain, {
        timeoutMs: this.opts.timeoutMs,
        keepaliveMs: 10_000,
        algorithms: {
          cipher: ["aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "aes128-ctr", "aes256-ctr"],
        },
      });
    } catch (err) {
      if (err instanceof SshRefusedError) throw new FatalError(err.message);
      throw err;
    }
    // Small requests and window updates must not wait for ACKs of earlier ones (Nagle).
    client.setNoDelay(true);
    const conn = await new Promise<Connection>((resolve, reject) => {
      client.sftp((err, sftp) => {
        if (err) {
          client.end();
          reject(new UserError(`${this.name}: SFTP subsystem refused: ${err.message}`));
          return;
        }
        resolve({
          client,
          sftp,
          readHandles: new Map(),
          writeHandles: new Map(),
          closed: false,
        });
      });
    });
    const drop = () => {
      if (!conn.closed && !this.closing) this.health.dropped();
      conn.closed = true;
      if (this.conn && !this.closing) {
        this.conn.then((c) => {
          if (c === conn) this.conn = undefined;
        });
      }
    };
    client.on("close", drop);
    client.on("error", (err) => {
      log.warn("connection error", { host: this.name, error: err.message });
      drop();
    });
    return conn;
  }

  /** Runs one request with a timeout, reconnecting with backoff after a dropped connection. */
  private async request<T>(
    what: string,
    fn: (c: Connection) => Promise<T>,
    timeoutMs = this.opts.timeoutMs,
  ): Promise<T> {
    let delay = this.opts.backoffMs;
    for (let attempt = 0; ; attempt++) {
      let conn: Connection | undefined;
      try {
        conn = await this.connection();
        return await this.withTimeout(what, conn, fn(conn), timeoutMs);
      } catch (err) {
        if (err instanceof FatalError || this.closing) throw err;
        // A connection failure was counted where it happened (connection()); a name that
        // does not exist is an answer, not an error.
        if (conn && !isNotFound(err)) this.health.error(errorMessage(err));
        if (isSftpStatus(err)) {
          const code = (err as { code: number }).code;
          throw new UserError(`${this.name}: ${what}: ${SFTP_STATUS[code] ?? errorMessage(err)}`, {
            cause: err,
          });
        }
        if (attempt >= this.opts.maxRetries) {
          throw err instanceof UserError
            ? err
            : new UserError(`${this.name}: ${what}: ${errorMessage(err)}`, { cause: err });
        }
        log.info("request failed; reconnecting", { host: this.name, what, attempt, delay });
        if (conn && !conn.closed) {
          conn.closed = true;
          conn.client.end();
          if (this.conn) this.conn = undefined;
        }
        await new Promise((r) => setTimeout(r, delay));
        delay = Math.min(delay * 2, 10_000);
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

  read(path: string, offset: number, length: number, onPart?: ReadPartCallback): Promise<Buffer> {
    return this.request(`read ${path} @${offset}+${length}`, async (c) => {
      const handle = await this.handle(c, path, false);
      const out = Buffer.allocUnsafe(length);
      const chunk = this.opts.readChunkBytes;
      const parts: Promise<number>[] = [];
      for (let pos = 0; pos < length; pos += chunk) {
        const len = Math.min(chunk, length - pos);
        parts.push(
          new Promise<number>((res, rej) =>
            c.sftp.read(handle, out, pos, len, offset + pos, (err, nb) => {
              if (err) return rej(err);
              if (nb === len) onPart?.(pos, nb, out);
              res(nb);
            }),
          ),
        );
      }
      const got = await Promise.all(parts);
      let total = 0;
      for (let i = 0; i < got.length; i++) {
        total += got[i]!;
        if (got[i]! < Math.min(chunk, length - i * chunk)) break;
      }
      return out.subarray(0, total);
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
  ): Promise<{ code: number; stdout: string; stderr: string }> {
    const conn = await this.request("connect", async (c) => c);
    const timeoutMs = opts.timeoutMs ?? 600_000;
    const what = `exec ${command.split("\n")[0]!.slice(0, 60)}`;
    return new Promise((resolve, reject) => {
      let stdout = "";
      let stderr = "";
      const timer = setTimeout(() => {
        reject(new UserError(`${this.name}: ${what}: no exit within ${timeoutMs} ms`));
      }, timeoutMs);
      conn.client.exec(command, (err, stream) => {
        if (err) {
          clearTimeout(timer);
          reject(new UserError(`${this.name}: ${what}: ${err.message}`, { cause: err }));
          return;
        }
        stream.on("data", (d: Buffer) => {
          stdout += d.toString();
        });
        opts.onChannel?.(stream);
        stream.stderr.on("data", (d: Buffer) => {
          stderr += d.toString();
        });
        stream.on("close", (code: number | null, signal?: string) => {
          clearTimeout(timer);
          if (code === null || code === undefined) {
            reject(
              new UserError(
                `${this.name}: ${what}: ended without exit status (${signal ?? "connection lost"})`,
              ),
            );
          } else resolve({ code, stdout, stderr });
        });
      });
    });
  }

  async close(): Promise<void> {
    this.closing = true;
    this.health.closed();
    const p = this.conn;
    this.conn = undefined;
    if (!p) return;
    try {
      const c = await p;
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
