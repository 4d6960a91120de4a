/**
 * known_hosts checking as OpenSSH does it: plain patterns (with `*`, `?`, `!` negation),
 * hashed `|1|salt|hash` entries and the `[host]:port` form for non-default ports, over
 * several files (UserKnownHostsFile lists, GlobalKnownHostsFile). `@revoked` lines refuse the
 * key; `@cert-authority` lines are not trusted (LazyFS takes no host certificates) and are
 * skipped with a debug line. A host known only with keys of other types is "unknown" (as in
 * ssh), a host known with another key of the same type is "changed".
 */
import { createHash, createHmac, randomBytes } from "node:crypto";
import { appendFile, mkdir, readFile } from "node:fs/promises";
import { dirname } from "node:path";
import { errnoCode } from "../common/errors.js";
import { logger } from "../common/log.js";

const log = logger("origin/knownhosts");

export type HostKeyVerdict = "known" | "unknown" | "changed" | "revoked";

/** `[host]:port`, or the plain host for port 22. */
export function hostPortName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

/** The key type named inside an SSH public key blob (`ssh-ed25519`, ...). */
export function keyType(blob: Buffer): string {
  if (blob.length < 4) return "unknown";
  const len = blob.readUInt32BE(0);
  return blob.subarray(4, 4 + len).toString("latin1");
}

/** `SHA256:...` fingerprint as ssh prints it. */
export function fingerprint(blob: Buffer): string {
  return `SHA256:${createHash("sha256").update(blob).digest("base64").replace(/=+$/, "")}`;
}

function wildcardMatch(pattern: string, name: string): boolean {
  const re = pattern
    .replace(/[.+^${}()|[\]\\]/g, "\\$&")
    .replace(/\*/g, ".*")
    .replace(/\?/g, ".");
  return new RegExp(`^${re}$`, "i").test(name);
}

function hostFieldMatches(field: string, name: string): boolean {
  if (field.startsWith("|1|")) {
    const [, , salt, hash] = field.split("|");
    if (!salt || !hash) return false;
    const mac = createHmac("sha1", Buffer.from(salt, "base64")).update(name).digest("base64");
    return mac === hash;
  }
  let matched = false;
  for (const pat of field.split(",")) {
    if (pat.startsWith("!")) {
      if (wildcardMatch(pat.slice(1), name)) return false;
    } else if (wildcardMatch(pat, name)) {
      matched = true;
    }
  }
  return matched;
}

/** Judges `blob` for `host:port` against the text of a known_hosts file. */
export function checkKnownHosts(
  text: string,
  host: string,
  port: number,
  blob: Buffer,
): HostKeyVerdict {
  return judgeHostKey([{ file: "known_hosts", text }], hostPortName(host, port), blob).verdict;
}

/** One known_hosts file's path and text. */
export interface KnownHostsText {
  file: string;
  text: string;
}

/**
 * Judges `blob` for the known_hosts name `name` (`host`, `[host]:port` or a HostKeyAlias)
 * over several files: revoked anywhere wins, then known anywhere, then changed (another key
 * of the same type), else unknown. `file`/`line` say where the deciding entry is.
 */
export function judgeHostKey(
  files: KnownHostsText[],
  name: string,
  blob: Buffer,
): { verdict: HostKeyVerdict; file?: string; line?: number } {
  const b64 = blob.toString("base64");
  const type = keyType(blob);
  let known: { file: string; line: number } | undefined;
  let changed: { file: string; line: number } | undefined;
  for (const { file, text } of files) {
    const lines = text.split("\n");
    for (let i = 0; i < lines.length; i++) {
      const line = lines[i]!.trim();
      if (!line || line.startsWith("#")) continue;
      const parts = line.split(/\s+/);
      let marker: string | undefined;
      if (parts[0]?.startsWith("@")) marker = parts.shift();
      const [hosts, lineType, key] = parts;
      if (!hosts || !lineType || !key || !hostFieldMatches(hosts, name)) continue;
      if (marker === "@cert-authority") {
        log.debug("@cert-authority line ignored (host certificates are not supported)", {
          file,
          line: i + 1,
          host: name,
        });
        continue;
      }
      if (marker === "@revoked") {
        if (key === b64) return { verdict: "revoked", file, line: i + 1 };
        continue;
      }
      if (marker !== undefined) continue;
      if (key === b64) known ??= { file, line: i + 1 };
      else if (lineType === type) changed ??= { file, line: i + 1 };
    }
  }
  if (known) return { verdict: "known", ...known };
  if (changed) return { verdict: "changed", ...changed };
  return { verdict: "unknown" };
}

/** Reads the known_hosts files that exist (a missing one is empty). */
export async function readKnownHostsFiles(files: string[]): Promise<KnownHostsText[]> {
  return Promise.all(files.map(async (file) => ({ file, text: await readKnownHosts(file) })));
}

/** `|1|salt|hash` for `name`, as `ssh-keygen -H` and HashKnownHosts write it. */
export function hashHostName(name: string, salt: Buffer = randomBytes(20)): string {
  const mac = createHmac("sha1", salt).update(name).digest("base64");
  return `|1|${salt.toString("base64")}|${mac}`;
}

export async function readKnownHosts(file: string): Promise<string> {
  try {
    return await readFile(file, "utf8");
  } catch (err) {
    if (errnoCode(err) === "ENOENT") return "";
    throw err;
  }
}

export async function appendKnownHost(file: string, host: string, port: number, blob: Buffer) {
  await appendKnownHostName(file, hostPortName(host, port), blob);
}

/** Appends `name key` to `file` (hashed with `hash`), creating it and its directory. */
export async function appendKnownHostName(
  file: string,
  name: string,
  blob: Buffer,
  opts: { hash?: boolean } = {},
): Promise<void> {
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  const existing = await readKnownHosts(file);
  const sep = existing && !existing.endsWith("\n") ? "\n" : "";
  const field = opts.hash ? hashHostName(name) : name;
  await appendFile(file, `${sep}${field} ${keyType(blob)} ${blob.toString("base64")}\n`, {
    mode: 0o600,
  });
}
