/**
 * SFTP origin over one SSH connection (ssh2), as a standard OpenSSH server offers it.
 *
 * - The destination is resolved as OpenSSH resolves it (`ssh -G`, ssh/config.ts): identities
 *   (agent, then identity files), known_hosts and StrictHostKeyChecking, ProxyJump,
 *   ConnectTimeout and ServerAliveInterval come from the user's SSH configuration.
 * - A range read is split into requests of at most the server's read limit, all in flight at
 *   once on the same channel; file handles are kept open per path.
 * - Every request has a timeout; a dropped connection is re-established with exponential
 *   backoff and the request retried (request.ts; reconnect.ts: hard, soft or bounded retries).
 *   Failures are `UserError`s naming host and path.
 * - A read may carry a check (ReadCheck): the handle's attributes are fetched right behind
 *   the data (fstat, pipelined) and, when the file is opened on a connection, its exact
 *   identity (`stat`: inode, ctime, ns times) through the shell the connection keeps open
 *   (shell-session.ts); data is handed over only once the check passed.
 * - `retarget` moves the origin to another address: same host key (known for the old one),
 *   or one explicitly accepted.
 *
 * This file is the Origin's surface and the connection's life; each operation is one request
 * (request.ts) around the SFTP call of its own file: read.ts, metadata.ts, write.ts, checks in
 * exact-check.ts; options.ts, connection.ts and host-trust.ts for reaching the origin.
 */
import type { ClientChannel } from "ssh2";
import { errorMessage, UserError } from "../../common/errors.js";
import { logger } from "../../common/log.js";
import {
  type ChainOptions,
  type SshConfig,
  SshRefusedError,
  sshChainFor,
} from "../../ssh/index.js";
import { OriginHealth } from "../health.js";
import { type LinkStatus, type OutagePolicy, Reconnector } from "../reconnect.js";
import type { Origin, OriginDirEntry, OriginStat, ReadCheck, ReadPartCallback } from "../types.js";
import {
  type Connection,
  type OpenedConnection,
  openHandle,
  openSftpConnection,
} from "./connection.js";
import { attrsCheck, verifyHandle } from "./exact-check.js";
import { type ExecResult, execOnClient } from "./exec.js";
import { notTheOriginsKey, originKeyTrust } from "./host-trust.js";
import { lstatOf, readdirOf, readlinkOf, statOf } from "./metadata.js";
import {
  originName,
  type ResolvedSftpOptions,
  type SftpOriginOptions,
  withDefaults,
} from "./options.js";
import { readRange } from "./read.js";
import { FatalError, type RequestContext, request } from "./request.js";
import { putFile, truncateTo, uploadSize, writeAt } from "./write.js";

const log = logger("origin/sftp");

export class SftpOrigin implements Origin {
  readonly mtimePrecisionMs = 1000;
  private readonly opts: ResolvedSftpOptions;
  private readonly noAgent: boolean;
  /** The connection chain (`ssh -G` of the destination and its jump hosts), once resolved. */
  private route?: Promise<SshConfig[]>;
  private readonly outage: OutagePolicy;
  private readonly keeper: Reconnector<Connection>;
  /** What `request` needs of this origin. */
  private readonly requests: RequestContext;
  /** The host key of the last connection (what "the same host" means for `retarget`). */
  private lastHostKey?: Buffer;
  private closing = false;
  /** Connections, reconnects, failed requests and state, for status and metrics. */
  readonly health = new OriginHealth();

  constructor(options: SftpOriginOptions) {
    this.opts = withDefaults(options);
    this.noAgent = "agent" in options && !options.agent;
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
      originName(this.opts),
    );
    this.requests = {
      name: () => this.name,
      closing: () => this.closing,
      keeper: this.keeper,
      outage: this.outage,
      health: this.health,
      backoffMs: this.opts.backoffMs,
    };
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
   * Reaches the origin at `destination` (as ssh takes it) from now on. Its host key must be
   * the origin's (the key of the last connection, or one known_hosts lists for the current
   * address), one known for the new address, or `acceptFingerprint` (`SHA256:...`); a key
   * accepted that way is recorded in known_hosts for the new address. Resolves once connected
   * there; requests waiting go on there.
   */
  async retarget(destination: string, acceptFingerprint?: string): Promise<void> {
    if (this.closing) throw new UserError(`${this.name}: origin is closed`);
    const oldChain = await this.resolveRoute().catch(() => undefined);
    const oldHop = oldChain?.[oldChain.length - 1];
    const keys = originKeyTrust(this.lastHostKey, acceptFingerprint, oldHop);
    const target: ChainOptions = { ...this.opts, destination };
    const route = sshChainFor(target, this.noAgent);
    let conn: Connection;
    try {
      conn = await this.openConnection(await route, keys.trust);
    } catch (err) {
      const offered = keys.offered();
      if (err instanceof FatalError && offered && /host key/i.test(err.message)) {
        throw notTheOriginsKey(destination, this.name, offered);
      }
      throw err;
    }
    const from = this.name;
    this.opts.destination = destination;
    this.route = route;
    const previous = this.keeper.retarget(() => this.openConnection(), originName(target), conn);
    if (previous && !previous.closed) {
      previous.closed = true;
      previous.client.destroy(); // requests stuck on it fail now and go to the new one
    }
    log.info("origin moved", { from, to: this.name });
  }

  private resolveRoute(): Promise<SshConfig[]> {
    const route = this.route ?? sshChainFor(this.opts, this.noAgent);
    this.route = route;
    route.catch(() => {
      if (this.route === route) this.route = undefined;
    });
    return route;
  }

  /**
   * One connection through the resolved chain. `trust` may accept the destination's host key
   * where known_hosts does not (lazyfs origin: the origin's key at a new address).
   */
  private async openConnection(
    chain?: SshConfig[],
    trust?: (key: Buffer) => Promise<boolean>,
  ): Promise<Connection> {
    this.health.connecting();
    try {
      const conn = await this.connectThrough(chain, trust);
      this.health.connected();
      return conn;
    } catch (err) {
      this.health.error(errorMessage(err));
      this.health.dropped();
      throw err;
    }
  }

  private async connectThrough(
    chain: SshConfig[] | undefined,
    trust: ((key: Buffer) => Promise<boolean>) | undefined,
  ): Promise<Connection> {
    if (!chain) {
      try {
        chain = await this.resolveRoute();
      } catch (err) {
        // An invalid destination or SSH configuration: retrying cannot help.
        throw err instanceof UserError ? new FatalError(err.message) : err;
      }
    }
    let opened: OpenedConnection;
    try {
      opened = await openSftpConnection(chain, {
        timeoutMs: this.opts.timeoutMs,
        name: this.name,
        ...(trust ? { trust } : {}),
      });
    } catch (err) {
      if (err instanceof SshRefusedError) throw new FatalError(err.message);
      throw err;
    }
    const { conn, name } = opened;
    const { client, shell } = conn;
    const seenKey = conn.hostKey;
    if (seenKey) this.lastHostKey = seenKey;
    const drop = (err?: unknown) => {
      if (!conn.closed && !this.closing) this.health.dropped();
      conn.closed = true;
      shell.close();
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
  private request<T>(
    what: string,
    fn: (c: Connection) => Promise<T>,
    timeoutMs = this.opts.timeoutMs,
  ): Promise<T> {
    return request(this.requests, what, fn, timeoutMs);
  }

  stat(path: string): Promise<OriginStat> {
    return this.request(`stat ${path}`, (c) => statOf(c, path));
  }

  lstat(path: string): Promise<OriginStat> {
    return this.request(`lstat ${path}`, (c) => lstatOf(c, path));
  }

  readlink(path: string): Promise<string> {
    return this.request(`readlink ${path}`, (c) => readlinkOf(c, path));
  }

  read(
    path: string,
    offset: number,
    length: number,
    onPart?: ReadPartCallback,
    check?: ReadCheck,
  ): Promise<Buffer> {
    return this.request(`read ${path} @${offset}+${length}`, async (c) => {
      const handle = await openHandle(c, path, false);
      // The exact check (once per file and connection) runs beside the reads: their bytes
      // are used only once it and the fstat behind them passed.
      const exact = check ? verifyHandle(c, () => this.name, path, check) : undefined;
      exact?.catch(() => {});
      const verify = check ? attrsCheck(check) : undefined;
      return readRange(
        c.sftp,
        handle,
        offset,
        length,
        this.opts.readChunkBytes,
        onPart,
        verify,
        exact,
      );
    });
  }

  readdir(path: string): Promise<OriginDirEntry[]> {
    return this.request(`readdir ${path}`, (c) => readdirOf(c, path));
  }

  write(path: string, offset: number, data: Buffer): Promise<void> {
    return this.request(`write ${path} @${offset}+${data.length}`, (c) =>
      writeAt(c, path, offset, data),
    );
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
    const size = await uploadSize(localPath, () => this.name);
    const timeoutMs = opts.timeoutMs ?? this.opts.timeoutMs + Math.ceil(size / 1048576) * 1000;
    await this.request(
      `upload ${localPath} to ${remotePath}`,
      (c) => putFile(c, localPath, remotePath, opts.mode ?? 0o600),
      timeoutMs,
    );
    return size;
  }

  truncate(path: string, size: number): Promise<void> {
    return this.request(`truncate ${path} to ${size}`, (c) => truncateTo(c, path, size));
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

  /**
   * Runs a short script in the connection's long-lived shell (shell-session.ts): one round
   * trip instead of a channel, a fork and a shell start; scripts run one at a time there, so
   * only quick ones belong here. Resolves with its stdout.
   */
  async shellScript(script: string, timeoutMs = 60_000): Promise<string> {
    const conn = await this.request("connect", async (c) => c);
    return conn.shell.run(script, timeoutMs);
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
    this.health.closed();
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
