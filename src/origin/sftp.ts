/**
 * SFTP origin over one SSH connection (ssh2), as a standard OpenSSH server offers it.
 *
 * - Authentication by identity file and/or ssh-agent (`SSH_AUTH_SOCK`).
 * - Host key checked against known_hosts; an unknown key is refused unless
 *   `acceptNewHostKey` (then it is appended), a changed or revoked key is always refused.
 * - A range read is split into requests of at most the server's read limit, all in flight at
 *   once on the same channel; file handles are kept open per path.
 * - Every request has a timeout; a dropped connection is re-established with exponential
 *   backoff and the request retried. Failures are `UserError`s naming host and path.
 */
import { readFile, stat } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";
import { Client, type ClientChannel, type ConnectConfig, type SFTPWrapper, type Stats } from "ssh2";
import { errorMessage, UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import {
  appendKnownHost,
  checkKnownHosts,
  fingerprint,
  type HostKeyVerdict,
  keyType,
  readKnownHosts,
} from "./knownhosts.js";
import { permanentSshError } from "./ssh-errors.js";
import type { Origin, OriginDirEntry, OriginStat, ReadPartCallback } from "./types.js";

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
  private readonly opts: Required<Omit<SftpOriginOptions, "identityFile" | "agent">> &
    Pick<SftpOriginOptions, "identityFile" | "agent">;
  private conn?: Promise<Connection>;
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
    this.name = `${this.opts.username}@${this.opts.host}:${this.opts.port}`;
  }

  /** Opens the connection now (otherwise the first request does); surfaces auth/host-key errors. */
  async connect(): Promise<void> {
    await this.connection();
  }

  private connection(): Promise<Connection> {
    if (this.closing) return Promise.reject(new UserError(`${this.name}: origin is closed`));
    if (!this.conn) {
      const p = this.openConnection();
      this.conn = p;
      p.catch(() => {
        if (this.conn === p) this.conn = undefined;
      });
    }
    return this.conn;
  }

  private async openConnection(): Promise<Connection> {
    const { host, port, knownHostsFile } = this.opts;
    const knownText = await readKnownHosts(knownHostsFile);
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
          `${this.name}: cannot read identity file ${this.opts.identityFile}: ${errorMessage(err)}`,
        );
      }
    }
    if (this.opts.agent) config.agent = this.opts.agent;
    if (!config.privateKey && !config.agent) {
      throw new FatalError(`${this.name}: no identity file given and no ssh-agent (SSH_AUTH_SOCK)`);
    }
    let verdict: HostKeyVerdict | undefined;
    let newKey: Buffer | undefined;
    let seenKey: Buffer | undefined;
    config.hostVerifier = (key: Buffer) => {
      seenKey = key;
      verdict = checkKnownHosts(knownText, host, port, key);
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
      client.on("error", (err: Error & { level?: string }) => {
        if (verdict !== undefined && verdict !== "known" && !newKey && seenKey) {
          const fp = fingerprint(seenKey);
          const why =
            verdict === "unknown"
              ? `unknown host key ${keyType(seenKey)} ${fp}, not in ${knownHostsFile} (accept it explicitly to trust it)`
              : verdict === "revoked"
                ? `host key ${fp} is revoked in ${knownHostsFile}`
                : `HOST KEY CHANGED: ${keyType(seenKey)} ${fp} does not match ${knownHostsFile}; refusing (possible man-in-the-middle)`;
          reject(new FatalError(`${this.name}: ${why}`));
        } else if (err.level === "client-authentication") {
          reject(new FatalError(`${this.name}: authentication failed (${err.message})`));
        } else {
          reject(new UserError(`${this.name}: cannot connect: ${err.message}`, { cause: err }));
        }
      });
      client.connect(config);
    });
    if (newKey) {
      await appendKnownHost(knownHostsFile, host, port, newKey);
      log.warn("accepted new host key", { host: this.name, fingerprint: fingerprint(newKey) });
    }
    const drop = () => {
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
        const permanent = permanentSshError(this.name, this.opts.identityFile, err);
        if (permanent) throw permanent;
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
