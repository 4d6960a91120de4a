/**
 * Whether the host key offered at a new address is the origin's, when `retarget` moves the
 * origin there: the key of the last connection, one that known_hosts lists for the current
 * address, or one the user accepted by fingerprint. Apart from the connection so that "the
 * same host" is decided in one place, with the message that says how to accept another key.
 */
import { UserError } from "../../common/errors.js";
import {
  fingerprint,
  judgeHostKey,
  keyType,
  knownHostsNameOf,
  readKnownHostsFiles,
  type SshConfig,
} from "../../ssh/index.js";

export interface OriginKeyTrust {
  /** Accepts the destination's key where known_hosts does not (connection's `trust`). */
  trust: (key: Buffer) => Promise<boolean>;
  /** The key the new address offered, once it did. */
  offered(): Buffer | undefined;
}

/**
 * Trusts `lastKey` (the last connection's), the key fingerprinted `acceptFingerprint`
 * (`SHA256:...`), or one known_hosts lists for `oldHop` (the current address's last hop).
 */
export function originKeyTrust(
  lastKey: Buffer | undefined,
  acceptFingerprint: string | undefined,
  oldHop: SshConfig | undefined,
): OriginKeyTrust {
  let offered: Buffer | undefined;
  const trust = async (key: Buffer): Promise<boolean> => {
    offered = key;
    if (lastKey?.equals(key)) return true;
    if (acceptFingerprint && fingerprint(key) === acceptFingerprint) return true;
    if (!oldHop) return false;
    const files = [...oldHop.userKnownHostsFiles, ...oldHop.globalKnownHostsFiles];
    const j = judgeHostKey(await readKnownHostsFiles(files), knownHostsNameOf(oldHop), key);
    return j.verdict === "known";
  };
  return { trust, offered: () => offered };
}

/** `destination` offered `offered`, which is not the key of the origin named `name`. */
export function notTheOriginsKey(destination: string, name: string, offered: Buffer): UserError {
  const fp = fingerprint(offered);
  return new UserError(
    `${destination}: host key ${keyType(offered)} ${fp} is not the origin's (${name} had another, and known_hosts does not list it for ${destination}); if this is the origin, accept it with --accept-host-key ${fp}`,
  );
}
