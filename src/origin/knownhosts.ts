/**
 * known_hosts checking as OpenSSH does it: plain patterns (with `*`, `?`, `!` negation),
 * hashed `|1|salt|hash` entries and the `[host]:port` form for non-default ports.
 * `@revoked` lines refuse the key; `@cert-authority` lines are ignored.
 */
import { createHash, createHmac } from "node:crypto";
import { appendFile, mkdir, readFile } from "node:fs/promises";
import { dirname } from "node:path";
import { errnoCode } from "../common/errors.js";

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
  const name = hostPortName(host, port);
  const b64 = blob.toString("base64");
  let sawHost = false;
  let known = false;
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const parts = line.split(/\s+/);
    let marker: string | undefined;
    if (parts[0]?.startsWith("@")) marker = parts.shift();
    const [hosts, type, key] = parts;
    if (!hosts || !type || !key || !hostFieldMatches(hosts, name)) continue;
    if (marker === "@cert-authority") continue;
    if (marker === "@revoked") {
      if (key === b64) return "revoked";
      continue;
    }
    sawHost = true;
    if (key === b64) known = true;
  }
  if (known) return "known";
  return sawHost ? "changed" : "unknown";
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
  await mkdir(dirname(file), { recursive: true, mode: 0o700 });
  const existing = await readKnownHosts(file);
  const sep = existing && !existing.endsWith("\n") ? "\n" : "";
  await appendFile(
    file,
    `${sep}${hostPortName(host, port)} ${keyType(blob)} ${blob.toString("base64")}\n`,
    {
      mode: 0o600,
    },
  );
}
