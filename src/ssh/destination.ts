/**
 * SSH destinations as `ssh` takes them: `host`, `user@host`, a Host alias of the user's
 * config, `ssh://[user@]host[:port]` (IPv6 in brackets), and the jump-host form
 * `[user@]host[:port]` of ProxyJump.
 */
import { UserError } from "../common/errors.js";

export interface Destination {
  /** Host name, address or alias, as typed (brackets of an IPv6 address removed). */
  host: string;
  user?: string;
  port?: number;
}

function checkPort(text: string, where: string): number {
  const port = Number(text);
  if (!/^\d+$/.test(text) || port < 1 || port > 65535) {
    throw new UserError(`${where}: port ${text} is not between 1 and 65535`);
  }
  return port;
}

function checkHost(host: string, where: string): string {
  if (!host || host.startsWith("-") || /[\s/@'"`\\]/.test(host)) {
    throw new UserError(
      `${where} is not of the form ssh://user@host[:port], user@host, host or a Host alias`,
    );
  }
  return host;
}

/**
 * Parses what a user typed for `--from`/`--origin` (or a ProxyJump hop, `hop: true`, which
 * also takes `host:port`). Throws a UserError naming the text when `ssh` would not take it.
 */
export function parseDestination(text: string, opts: { hop?: boolean } = {}): Destination {
  const where = `${opts.hop ? "ProxyJump host" : "origin"} ${JSON.stringify(text)}`;
  const uri = /^ssh:\/\/(?:([^@/]+)@)?(\[[0-9a-fA-F:.]+\]|[^@/:[\]]+)(?::([^/]*))?\/?$/.exec(text);
  if (text.startsWith("ssh://")) {
    if (!uri) {
      throw new UserError(`${where} is not of the form ssh://user@host[:port]`);
    }
    const host = checkHost(uri[2]!.replace(/^\[|\]$/g, ""), where);
    return {
      host,
      ...(uri[1] ? { user: uri[1] } : {}),
      ...(uri[3] !== undefined ? { port: checkPort(uri[3], where) } : {}),
    };
  }
  const at = text.lastIndexOf("@");
  const user = at >= 0 ? text.slice(0, at) : undefined;
  let rest = at >= 0 ? text.slice(at + 1) : text;
  if (user === "") throw new UserError(`${where}: empty user name`);
  let port: number | undefined;
  if (opts.hop) {
    const m = /^(\[[^\]]+\]|[^:]+)(?::(.*))?$/.exec(rest);
    if (m?.[2] !== undefined) {
      port = checkPort(m[2], where);
      rest = m[1]!;
    }
    rest = rest.replace(/^\[|\]$/g, "");
  }
  return {
    host: checkHost(rest, where),
    ...(user ? { user } : {}),
    ...(port ? { port } : {}),
  };
}

/** `user@host:port` for messages. */
export function destinationName(d: { user: string; hostname: string; port: number }): string {
  const host = d.hostname.includes(":") ? `[${d.hostname}]` : d.hostname;
  return `${d.user}@${host}:${d.port}`;
}
