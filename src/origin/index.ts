/**
 * Origins: where a migrated file's bytes come from (host A).
 *
 *   interface Origin { name; mtimePrecisionMs; stat(path); read(path, offset, length);
 *                      readdir(path); write(path, offset, data); truncate(path, size); close() }
 *   new SftpOrigin({ destination?, sshConfigFile?, sshOptions?, host, port?, username?,
 *                    identityFile?, agent?, knownHostsFile?, acceptNewHostKey?, timeoutMs?,
 *                    maxRetries?, backoffMs? })   // resolved with `ssh -G` (ssh/config.ts)
 *   new LocalOrigin(root = "/")               // same machine; root stands for the origin's "/"
 *   new ScrubOrigin(content, base?)           // honeypot: synthesized bytes, metadata from base
 */
export {
  EXACT_STAT_FORMAT,
  exactStatScript,
  type FileIdentity,
  identityDiffers,
  parseExactStat,
} from "./exact-stat.js";
export { type ConnectionState, OriginHealth, type OriginHealthFigures } from "./health.js";
export { LocalOrigin } from "./local.js";
export type { LinkState, LinkStatus, OutagePolicy } from "./reconnect.js";
export { type ScrubContent, type ScrubGenerator, ScrubOrigin, seededBytes } from "./scrub.js";
export type { SftpOriginOptions } from "./sftp/options.js";
export { SftpOrigin } from "./sftp/origin.js";
export {
  isNotFound,
  type Origin,
  type OriginDirEntry,
  type OriginStat,
  type ReadCheck,
  type ReadPartCallback,
} from "./types.js";
