/**
 * One authenticated SSH connection to a resolved chain (jump hosts first, the destination
 * last), as ssh makes it: each hop's host key judged by its own configuration, its identities
 * offered in ssh's order, ConnectTimeout and ServerAliveInterval/CountMax applied, and every
 * hop after the first reached through `forwardOut` on the previous one (ssh's ProxyJump).
 * Ending the returned client ends the jump connections too.
 */
import type { Duplex } from "node:stream";
import { Client, type ConnectConfig } from "ssh2";
import { errorMessage, UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import type { SshConfig } from "./config.js";
import { destinationName } from "./destination.js";
import { hostKeyCheck } from "./host-key.js";
import { identityAuth } from "./identities.js";
import { canAsk } from "./prompt.js";

const log = logger("origin/ssh");

/** Host-key and authentication refusals: retrying cannot help. */
export class SshRefusedError extends UserError {}

export interface SshConnectOptions {
  /** Handshake timeout when the config has no ConnectTimeout (ms). */
  timeoutMs: number;
  /** ServerAliveInterval when the config has none (ms; 0: off). */
  keepaliveMs?: number;
  algorithms?: ConnectConfig["algorithms"];
  /** Told the destination's host key (the last hop's) once it is offered. */
  onDestinationKey?: (key: Buffer) => void;
  /**
   * Accepts the destination's host key where known_hosts does not (recorded then as
   * accept-new would); `lazyfs origin` uses it for the origin's key at a new address.
   */
  trustDestinationKey?: (key: Buffer) => Promise<boolean>;
}

/** While a passphrase or a host key may be asked on the terminal, the handshake may wait. */
const INTERACTIVE_READY_MS = 10 * 60_000;

function forwardOut(client: Client, cfg: SshConfig, where: string): Promise<Duplex> {
  return new Promise((resolve, reject) => {
    client.forwardOut("127.0.0.1", 0, cfg.hostname, cfg.port, (err, stream) => {
      if (err) {
        reject(
          new UserError(
            `${where}: jump host cannot reach ${cfg.hostname}:${cfg.port}: ${err.message}`,
          ),
        );
      } else resolve(stream);
    });
  });
}

async function connectHop(
  cfg: SshConfig,
  opts: SshConnectOptions,
  sock: Duplex | undefined,
  via: string,
  last: boolean,
): Promise<Client> {
  const where = `${destinationName(cfg)}${via}`;
  const check = hostKeyCheck(cfg, where, last ? opts.trustDestinationKey : undefined);
  const { authHandler, attempts } = await identityAuth(cfg, where);
  const keepalive = cfg.serverAliveIntervalMs || opts.keepaliveMs || 0;
  const config: ConnectConfig = {
    host: cfg.hostname,
    port: cfg.port,
    username: cfg.user,
    readyTimeout: canAsk() ? INTERACTIVE_READY_MS : (cfg.connectTimeoutMs ?? opts.timeoutMs),
    keepaliveInterval: keepalive,
    keepaliveCountMax: cfg.serverAliveCountMax,
    authHandler,
    hostVerifier: (key: Buffer, verify: (ok: boolean) => void) => {
      if (last) opts.onDestinationKey?.(key);
      check.verify(key, verify);
    },
    ...(sock ? { sock } : {}),
    ...(opts.algorithms ? { algorithms: opts.algorithms } : {}),
  };
  const client = new Client();
  return new Promise<Client>((resolve, reject) => {
    let settled = false;
    const onError = (err: Error & { level?: string }) => {
      if (settled) return;
      settled = true;
      client.end();
      const refused = check.refusal();
      if (refused) {
        reject(new SshRefusedError(`${where}: ${refused}`));
      } else if (
        err.level === "client-authentication" ||
        /too many authentication failures/i.test(err.message)
      ) {
        const tried = attempts.tried.length ? attempts.tried.join(", ") : "no usable identity";
        reject(
          new SshRefusedError(
            `${where}: authentication failed (${err.level === "client-authentication" ? "" : `${err.message} after `}tried ${tried}; identity files: ${cfg.identityFiles.join(", ") || "none"}${cfg.identityAgent ? `; agent ${cfg.identityAgent}` : "; no agent"}${cfg.identitiesOnly ? "" : "; IdentitiesOnly yes limits the agent's keys to these files"})`,
          ),
        );
      } else {
        reject(new UserError(`${where}: cannot connect: ${err.message}`, { cause: err }));
      }
    };
    // Stays: ssh2 may report more errors after the first (a timeout, then the close).
    client.on("error", onError);
    client.once("ready", () => {
      settled = true;
      resolve(client);
    });
    client.connect(config);
  });
}

/**
 * Connects through `chain` (from resolveSshChain). The returned client is authenticated; its
 * `close` ends the jump hosts' connections.
 */
export async function connectSshChain(chain: SshConfig[], opts: SshConnectOptions) {
  const jumps: Client[] = [];
  let sock: Duplex | undefined;
  let via = "";
  const names: string[] = [];
  try {
    for (let i = 0; i < chain.length; i++) {
      const cfg = chain[i]!;
      if (i > 0) sock = await forwardOut(jumps[i - 1]!, cfg, `${destinationName(cfg)}${via}`);
      const client = await connectHop(cfg, opts, sock, via, i === chain.length - 1);
      if (i < chain.length - 1) {
        const name = destinationName(cfg);
        client.on("error", (err) => {
          log.warn("jump host connection error", { host: name, error: errorMessage(err) });
        });
        jumps.push(client);
        names.push(name);
        via = ` via ${names.join(" -> ")}`;
        log.debug("jump host connected", { host: name });
      } else {
        client.once("close", () => {
          for (const j of jumps.reverse()) j.end();
        });
        return client;
      }
    }
  } catch (err) {
    for (const j of jumps.reverse()) j.end();
    throw err;
  }
  throw new UserError("ssh: empty connection chain");
}
