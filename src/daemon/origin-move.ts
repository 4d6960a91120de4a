/**
 * The daemon's side of where the origin is and how it is trusted: the outage policy from the
 * manifest (hard by default, soft with `--origin-timeout`), the identity every origin read is
 * checked against (the dump's stat, or the snapshot clone's), and `lazyfs origin ID URL`:
 * moving a live migration to the origin's new address, persisted in the manifest so that a
 * restarted daemon goes there too.
 */
import { UserError } from "../common/errors.js";
import {
  type Manifest,
  type ManifestFile,
  readManifest,
  writeManifest,
} from "../migration/index.js";
import type { LinkStatus, OutagePolicy, SftpOrigin } from "../origin/index.js";
import { parseDestination } from "../ssh/index.js";
import type { FileMeta } from "../store/index.js";

export function outagePolicy(m: Manifest): OutagePolicy {
  const t = m.serve.originTimeoutMs;
  return t ? { mode: "soft", timeoutMs: t } : { mode: "hard" };
}

/** What the engine checks origin reads of `f` against, and where it reads them. */
export function checkpointIdentity(
  f: ManifestFile,
): Pick<FileMeta, "ino" | "ctimeMs" | "readPath"> {
  const s = f.snapshot;
  const from = s ?? f;
  return {
    ...(from.ino !== undefined ? { ino: from.ino } : {}),
    ...(from.ctimeMs !== undefined ? { ctimeMs: from.ctimeMs } : {}),
    ...(s ? { readPath: s.path } : {}),
  };
}

const FINGERPRINT = /^SHA256:[A-Za-z0-9+/]{43}$/;

export interface OriginMoved {
  origin: string;
  /** The new connection's state; null when the origin was already released. */
  link: LinkStatus | null;
}

/**
 * Points the migration at `url` (same user): connects there first (its host key must be the
 * origin's, or `acceptHostKey`), then records it in the manifest.
 */
export async function moveOrigin(
  manifestPath: string,
  s: { manifest: Manifest; sftp: SftpOrigin },
  url: string,
  acceptHostKey: string | undefined,
  released: () => boolean,
): Promise<OriginMoved> {
  const to = parseDestination(url);
  const from = parseDestination(s.manifest.origin);
  if (to.user && from.user && to.user !== from.user) {
    throw new UserError(`origin ${url}: the user cannot change (it is ${from.user})`);
  }
  if (acceptHostKey !== undefined && !FINGERPRINT.test(acceptHostKey)) {
    throw new UserError(
      `--accept-host-key ${JSON.stringify(acceptHostKey)}: expected a fingerprint such as SHA256:<43 base64 characters> (ssh-keygen -lf)`,
    );
  }
  if (!released()) await s.sftp.retarget(url, acceptHostKey);
  const latest = await readManifest(manifestPath);
  latest.origin = url;
  await writeManifest(manifestPath, latest);
  s.manifest.origin = latest.origin;
  return { origin: latest.origin, link: released() ? null : s.sftp.linkStatus() };
}
