import { UserError } from "../common/errors.js";

/** Where the origin host is: parsed from `ssh://user@host[:port]`. */
export interface OriginAddress {
  user: string;
  host: string;
  port: number;
}

/** Parses `ssh://user@host[:port]` (IPv6 hosts in brackets); user defaults to root. */
export function parseOriginUrl(url: string): OriginAddress {
  const m = /^ssh:\/\/(?:([^@/:]+)@)?(\[[0-9a-fA-F:.]+\]|[^@/:[\]]+)(?::(\d+))?\/?$/.exec(url);
  if (!m) {
    throw new UserError(
      `origin ${JSON.stringify(url)} is not of the form ssh://user@host[:port] (e.g. ssh://root@10.0.0.1)`,
    );
  }
  const port = m[3] === undefined ? 22 : Number(m[3]);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new UserError(`origin ${url}: port ${m[3]} is not between 1 and 65535`);
  }
  const host = m[2]!.replace(/^\[|\]$/g, "");
  return { user: m[1] ?? "root", host, port };
}

export function formatOriginUrl(a: OriginAddress): string {
  const host = a.host.includes(":") ? `[${a.host}]` : a.host;
  return `ssh://${a.user}@${host}${a.port === 22 ? "" : `:${a.port}`}`;
}
