/**
 * The host-key decision of one SSH connection, as ssh makes it from its configuration:
 * known_hosts files (UserKnownHostsFile..., GlobalKnownHostsFile...), HostKeyAlias and
 * StrictHostKeyChecking (`yes`: only known keys; `accept-new`: also new ones, recorded in the
 * first user known_hosts file; `no`: also changed ones, with a warning; `ask`: asks on the
 * terminal, and without one acts as `yes`). A revoked key is always refused.
 */
import { errorMessage } from "../common/errors.js";
import { logger } from "../common/log.js";
import type { SshConfig } from "./config.js";
import {
  appendKnownHostName,
  fingerprint,
  hostPortName,
  judgeHostKey,
  keyType,
  readKnownHostsFiles,
} from "./knownhosts.js";
import { askLine, canAsk } from "./prompt.js";

const log = logger("origin/host-key");

export interface HostKeyCheck {
  /** For ssh2's `hostVerifier` (asynchronous form). */
  verify(key: Buffer, done: (ok: boolean) => void): void;
  /** Why the key was refused, once `verify` said no. */
  refusal(): string | undefined;
}

/** The name ssh looks the host up under: HostKeyAlias, else `host` / `[host]:port`. */
export function knownHostsNameOf(cfg: SshConfig): string {
  return cfg.hostKeyAlias ?? hostPortName(cfg.hostname, cfg.port);
}

/**
 * `extraTrust`: accepts a key known_hosts does not list (as known: recorded in the first user
 * known_hosts file); a revoked key stays refused.
 */
export function hostKeyCheck(
  cfg: SshConfig,
  where: string,
  extraTrust?: (key: Buffer) => Promise<boolean>,
): HostKeyCheck {
  let why: string | undefined;
  const name = knownHostsNameOf(cfg);
  const files = [...cfg.userKnownHostsFiles, ...cfg.globalKnownHostsFiles];
  const listed = cfg.userKnownHostsFiles.join(", ") || "(no UserKnownHostsFile)";
  const record = async (key: Buffer) => {
    const file = cfg.userKnownHostsFiles[0];
    if (!file) return;
    try {
      await appendKnownHostName(file, name, key, { hash: cfg.hashKnownHosts });
      log.warn(`permanently added ${name} (${keyType(key)}) to the list of known hosts`, {
        file,
        fingerprint: fingerprint(key),
      });
    } catch (err) {
      log.warn(`cannot record the host key of ${name} in ${file}: ${errorMessage(err)}`);
    }
  };
  const decide = async (key: Buffer): Promise<boolean> => {
    const j = judgeHostKey(await readKnownHostsFiles(files), name, key);
    const fp = `${keyType(key)} ${fingerprint(key)}`;
    const at = j.file ? `${j.file}:${j.line}` : "";
    const strict = cfg.strictHostKeyChecking;
    if (j.verdict !== "known" && j.verdict !== "revoked" && (await extraTrust?.(key))) {
      await record(key);
      return true;
    }
    switch (j.verdict) {
      case "known":
        return true;
      case "revoked":
        why = `host key ${fp} of ${name} is revoked in ${at}`;
        return false;
      case "changed":
        if (strict === "no") {
          log.warn(
            `HOST KEY CHANGED for ${name} (now ${fp}, ${at} says otherwise); StrictHostKeyChecking no: connecting anyway`,
          );
          return true;
        }
        why = `HOST KEY CHANGED: ${fp} of ${name} does not match ${at}; refusing (possible man-in-the-middle; StrictHostKeyChecking ${strict})`;
        return false;
      case "unknown": {
        if (strict === "accept-new" || strict === "no") {
          await record(key);
          return true;
        }
        if (strict === "ask" && !cfg.batchMode && canAsk()) {
          for (;;) {
            const a = await askLine(
              `The authenticity of host '${name}' can't be established.\n${fp}.\nAre you sure you want to continue connecting (yes/no/[fingerprint])? `,
              { echo: true },
            );
            const answer = a?.trim();
            if (answer === "yes" || answer === fingerprint(key)) {
              await record(key);
              return true;
            }
            if (answer === undefined || answer === "no") break;
            process.stderr.write("Please type 'yes', 'no' or the fingerprint: ");
          }
          why = `host key ${fp} of ${name} not accepted`;
          return false;
        }
        why = `unknown host key ${fp} for ${name}, not in ${listed} (StrictHostKeyChecking ${strict}${strict === "ask" ? " and no terminal to ask" : ""}; add it with ssh-keyscan, or pass --accept-new-host-key or -o StrictHostKeyChecking=accept-new)`;
        return false;
      }
    }
  };
  return {
    verify(key, done) {
      decide(key).then(done, (err) => {
        why = `${where}: checking the host key: ${errorMessage(err)}`;
        done(false);
      });
    },
    refusal: () => why,
  };
}
