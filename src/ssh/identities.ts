/**
 * The identities ssh would offer, in its order, walked by ssh2's authHandler:
 *
 * 1. the agent's keys (IdentityAgent, default SSH_AUTH_SOCK); with IdentitiesOnly only those
 *    whose public key matches one of the identity files (`FILE.pub`, or the key itself);
 * 2. then each identity file that exists and is not already offered through the agent. An
 *    encrypted one is unlocked with a passphrase asked on the terminal (no echo, up to
 *    NumberOfPasswordPrompts tries) when stdin is one, and otherwise skipped with one line.
 *
 * Unlocked keys are kept for the life of the process (a reconnect never asks twice), and a
 * skipped key is reported once. The passphrases typed go to the daemon the process starts
 * (over its stdin, see migrate/secrets.ts), which has no terminal to ask on.
 */
import { readFile } from "node:fs/promises";
import ssh2, {
  type AnyAuthMethod,
  type AuthenticationType,
  type AuthHandlerMiddleware,
  BaseAgent,
  createAgent,
  type ParsedKey,
  type SignCallback,
  type SigningRequestOptions,
} from "ssh2";
import { errnoCode, errorMessage } from "../common/errors.js";
import { logger } from "../common/log.js";
import type { SshConfig } from "./config.js";
import { askLine, canAsk } from "./prompt.js";

const log = logger("origin/identities");
const { parseKey } = ssh2.utils;

/** Private keys unlocked in this process, by file. */
const unlocked = new Map<string, ParsedKey>();
/** Passphrases typed (or handed over by the parent process), by identity file. */
const passphrases = new Map<string, string>();
/** Files already reported as skipped (one line per file per process). */
const reported = new Set<string>();

/** The passphrases typed in this process, for a daemon it starts (never written to disk). */
export function typedPassphrases(): Record<string, string> {
  return Object.fromEntries(passphrases);
}

/** Passphrases handed over by the process that started this one. */
export function rememberPassphrases(byFile: Record<string, string>): void {
  for (const [file, pass] of Object.entries(byFile)) {
    if (typeof pass === "string") passphrases.set(file, pass);
  }
}

function isEncryptedError(err: Error): boolean {
  return /encrypted|passphrase/i.test(err.message);
}

function isBadPassphrase(err: Error): boolean {
  return /bad passphrase|bad decrypt|integrity check|decrypt/i.test(err.message);
}

/** The public key blob of an identity file, from FILE.pub or the unencrypted key itself. */
async function publicBlob(file: string): Promise<Buffer | undefined> {
  const known = unlocked.get(file);
  if (known) return known.getPublicSSH();
  for (const candidate of [`${file}.pub`, file]) {
    let data: Buffer;
    try {
      data = await readFile(candidate);
    } catch {
      continue;
    }
    const k = parseKey(data);
    if (!(k instanceof Error)) return k.getPublicSSH();
  }
  return undefined;
}

/** An agent that offers only some of another agent's keys. */
class ChosenKeysAgent extends BaseAgent<ParsedKey> {
  constructor(
    private readonly agent: BaseAgent,
    private readonly keys: ParsedKey[],
  ) {
    super();
  }
  getIdentities(cb: (err: Error | undefined, keys?: ParsedKey[]) => void): void {
    cb(undefined, this.keys);
  }
  sign(
    pubKey: ParsedKey,
    data: Buffer,
    options: SigningRequestOptions | SignCallback,
    cb?: SignCallback,
  ): void {
    if (typeof options === "function") this.agent.sign(pubKey, data, {}, options);
    else this.agent.sign(pubKey, data, options, cb);
  }
}

function agentKeys(agent: BaseAgent): Promise<ParsedKey[]> {
  return new Promise((resolve, reject) => {
    agent.getIdentities((err, keys) => {
      if (err) return reject(err);
      const out: ParsedKey[] = [];
      for (const k of keys ?? []) {
        const p = parseKey(k as Buffer);
        if (!(p instanceof Error)) out.push(p);
      }
      resolve(out);
    });
  });
}

/** Loads an identity file's private key; asks for a passphrase when it must and can. */
async function loadKey(
  file: string,
  cfg: SshConfig,
  where: string,
): Promise<ParsedKey | undefined> {
  const cached = unlocked.get(file);
  if (cached) return cached;
  let data: Buffer;
  try {
    data = await readFile(file);
  } catch (err) {
    if (errnoCode(err) !== "ENOENT") {
      warnOnce(file, `${file}: cannot read identity file (${errorMessage(err)}); skipped`);
    }
    return undefined;
  }
  const plain = parseKey(data);
  if (!(plain instanceof Error)) {
    if (!plain.isPrivateKey()) {
      warnOnce(file, `${file}: not a private key; skipped`);
      return undefined;
    }
    unlocked.set(file, plain);
    return plain;
  }
  if (!isEncryptedError(plain)) {
    warnOnce(file, `${file}: cannot parse identity file (${plain.message}); skipped`);
    return undefined;
  }
  const given = passphrases.get(file);
  if (given !== undefined) {
    const key = parseKey(data, given);
    if (!(key instanceof Error)) {
      unlocked.set(file, key);
      return key;
    }
  }
  if (cfg.batchMode || !canAsk()) {
    warnOnce(
      file,
      `${file}: key is encrypted and there is no terminal to ask its passphrase (for ${where}); skipped (add it to ssh-agent to use it)`,
    );
    return undefined;
  }
  for (let i = 0; i < cfg.numberOfPasswordPrompts; i++) {
    const pass = await askLine(`Enter passphrase for key '${file}': `, { echo: false });
    if (pass === undefined || pass === "") break;
    const key = parseKey(data, pass);
    if (!(key instanceof Error)) {
      unlocked.set(file, key);
      passphrases.set(file, pass);
      return key;
    }
    if (!isBadPassphrase(key)) {
      warnOnce(file, `${file}: ${key.message}; skipped`);
      return undefined;
    }
    process.stderr.write("Bad passphrase, try again.\n");
  }
  warnOnce(file, `${file}: no passphrase given; skipped`);
  return undefined;
}

function warnOnce(file: string, line: string): void {
  if (reported.has(file)) return;
  reported.add(file);
  log.warn(line);
}

/** What an authentication walk tried, for the error message when all failed. */
export interface AuthAttempts {
  tried: string[];
}

/**
 * The authHandler for one host: agent keys, then the identity files, as ssh orders them.
 * `attempts.tried` lists what was offered.
 */
export async function identityAuth(
  cfg: SshConfig,
  where: string,
): Promise<{ authHandler: AuthHandlerMiddleware; attempts: AuthAttempts }> {
  const attempts: AuthAttempts = { tried: [] };
  const steps: (() => Promise<AnyAuthMethod | undefined>)[] = [];
  const username = cfg.user;
  const inAgent: Buffer[] = [];
  if (cfg.identityAgent) {
    try {
      const agent = createAgent(cfg.identityAgent);
      let keys = await agentKeys(agent);
      if (cfg.identitiesOnly) {
        const wanted = (await Promise.all(cfg.identityFiles.map(publicBlob))).filter(
          (b): b is Buffer => b !== undefined,
        );
        keys = keys.filter((k) => wanted.some((w) => w.equals(k.getPublicSSH())));
      }
      inAgent.push(...keys.map((k) => k.getPublicSSH()));
      if (keys.length > 0) {
        steps.push(async () => {
          attempts.tried.push(`${keys.length} agent key(s)`);
          return { type: "agent", username, agent: new ChosenKeysAgent(agent, keys) };
        });
      }
      log.debug("agent keys", { agent: cfg.identityAgent, offered: keys.length });
    } catch (err) {
      log.debug("no usable ssh-agent", { agent: cfg.identityAgent, error: errorMessage(err) });
    }
  }
  for (const file of cfg.identityFiles) {
    steps.push(async () => {
      const pub = await publicBlob(file);
      if (pub && inAgent.some((b) => b.equals(pub))) return undefined;
      const key = await loadKey(file, cfg, where);
      if (!key) return undefined;
      attempts.tried.push(file);
      return { type: "publickey", username, key };
    });
  }
  let next = 0;
  const authHandler: AuthHandlerMiddleware = (
    methodsLeft: AuthenticationType[] | null,
    _partial: boolean,
    callback,
  ) => {
    const allowed = (t: AuthenticationType) =>
      !methodsLeft || methodsLeft.includes(t === "agent" ? "publickey" : t);
    const advance = async (): Promise<AnyAuthMethod | false> => {
      while (next < steps.length) {
        const m = await steps[next++]!();
        if (m && allowed(m.type)) return m;
      }
      return false;
    };
    advance().then(
      (m) => callback(m as AnyAuthMethod),
      () => callback(false as unknown as AnyAuthMethod),
    );
  };
  return { authHandler, attempts };
}
