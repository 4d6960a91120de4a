/**
 * The SFTP origin's options: what the user gives (the destination as typed for `ssh`, its SSH
 * configuration, timeouts, retries, the outage policy), their defaults, and the name the
 * origin goes by in messages and status. Apart from the origin so that its settings and their
 * defaults are read in one place.
 */
import type { ChainOptions } from "../../ssh/index.js";
import type { OutagePolicy } from "../reconnect.js";

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
  /** What a request does while the origin is unreachable; default bounded `maxRetries`. */
  outage?: OutagePolicy;
}

/** ssh2 keeps the server's read limit private; OpenSSH allows 256 KiB minus overhead. */
const DEFAULT_READ_CHUNK = 254 * 1024;

/** The options with their defaults filled in (those without a default stay optional). */
export type ResolvedSftpOptions = Required<
  Omit<
    SftpOriginOptions,
    | "identityFile"
    | "agent"
    | "destination"
    | "sshConfigFile"
    | "sshOptions"
    | "knownHostsFile"
    | "outage"
  >
> &
  Pick<
    SftpOriginOptions,
    "identityFile" | "agent" | "destination" | "sshConfigFile" | "sshOptions" | "knownHostsFile"
  >;

export function withDefaults(options: SftpOriginOptions): ResolvedSftpOptions {
  return {
    port: 22,
    username: process.env.USER ?? "root",
    acceptNewHostKey: false,
    timeoutMs: 30_000,
    maxRetries: 5,
    backoffMs: 200,
    readChunkBytes: DEFAULT_READ_CHUNK,
    ...options,
  };
}

/** As typed, except a full ssh:// URL: `user@host:port` as before. */
export function originName(o: ChainOptions): string {
  const typed = o.destination;
  return typed && !(typed.startsWith("ssh://") && o.username)
    ? typed.replace(/^ssh:\/\//, "").replace(/\/$/, "")
    : `${o.username}@${o.host}:${o.port}`;
}
