/**
 * One SSH connection to the origin as the SFTP origin uses it: through the resolved chain
 * (ProxyJump hops first), with the SFTP subsystem open and a shell started beside it for the
 * exact identity checks (shell-session.ts), plus the per-connection caches of file handles
 * and of files already checked.
 */
import type { Client, SFTPWrapper } from "ssh2";
import { UserError } from "../../common/errors.js";
import { connectSshChain, destinationName, type SshConfig } from "../../ssh/index.js";
import { ExactStatBatcher } from "../exact-stat.js";
import { cb } from "./read.js";
import { ShellSession } from "./shell-session.js";

/** Ciphers offered, in order of preference (AES-GCM: hardware-accelerated on most CPUs). */
export const CIPHERS = [
  "aes128-gcm@openssh.com",
  "aes256-gcm@openssh.com",
  "aes128-ctr",
  "aes256-ctr",
] as const;

export interface Connection {
  client: Client;
  sftp: SFTPWrapper;
  readHandles: Map<string, Promise<Buffer>>;
  writeHandles: Map<string, Promise<Buffer>>;
  /** Paths whose open handle was checked against their exact identity. */
  verified: Map<string, Promise<void>>;
  /** Runs the exact checks' `stat` scripts (one shell for the connection's life). */
  shell: ShellSession;
  exactStats: ExactStatBatcher;
  /** The host key this connection was accepted with. */
  hostKey?: Buffer;
  closed: boolean;
}

export interface OpenedConnection {
  conn: Connection;
  /** The destination's name (the chain's last hop), for messages. */
  name: string;
}

/**
 * Connects through `chain` and opens SFTP. `trust` may accept the destination's host key
 * where known_hosts does not; `name` names the origin when the chain is empty. Rejects with
 * ssh/connect.ts's errors (SshRefusedError for a refusal no retry can fix) or a UserError.
 */
export async function openSftpConnection(
  chain: SshConfig[],
  opts: { timeoutMs: number; name: string; trust?: (key: Buffer) => Promise<boolean> },
): Promise<OpenedConnection> {
  let seenKey: Buffer | undefined;
  const client = await connectSshChain(chain, {
    timeoutMs: opts.timeoutMs,
    keepaliveMs: 10_000,
    algorithms: { cipher: [...CIPHERS] },
    onDestinationKey: (key) => {
      seenKey = key;
    },
    ...(opts.trust ? { trustDestinationKey: opts.trust } : {}),
  });
  const last = chain[chain.length - 1];
  const name = last ? destinationName(last) : opts.name;
  // Small requests and window updates must not wait for ACKs of earlier ones (Nagle).
  client.setNoDelay(true);
  const shell = new ShellSession(client, name);
  const conn = await new Promise<Connection>((resolve, reject) => {
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
        shell,
        exactStats: new ExactStatBatcher((script) => shell.run(script, opts.timeoutMs)),
        ...(seenKey ? { hostKey: seenKey } : {}),
        closed: false,
      });
    });
  });
  // Started now, beside the first reads' SFTP requests: their exact checks run through it.
  shell.warm(opts.timeoutMs);
  return { conn, name };
}

/** The handle of `path` open on `conn` (opened once per path, for reading or for writing). */
export function openHandle(conn: Connection, path: string, write: boolean): Promise<Buffer> {
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
