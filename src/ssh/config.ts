/**
 * An SSH destination resolved the way OpenSSH resolves it, by asking OpenSSH:
 * `ssh -G [-F file] [-o K=V ...] [-i file ...] [-l user] [-p port] -- host` prints the
 * effective configuration (Include and Match applied, defaults included). Where `ssh` is not
 * installed, OpenSSH's defaults stand in (debug log), with `-o` options applied on top.
 *
 * Like ssh, `~` is the home directory of the user in the password database, not `$HOME`.
 */
import { execFile } from "node:child_process";
import { access } from "node:fs/promises";
import { hostname as localHostname, userInfo } from "node:os";
import { errnoCode, errorMessage, UserError } from "../common/errors.js";
import { logger } from "../common/log.js";
import { type Destination, parseDestination } from "./destination.js";

const log = logger("origin/ssh-config");

export type StrictHostKeyChecking = "yes" | "no" | "ask" | "accept-new";

/** What LazyFS uses of OpenSSH's effective configuration for one host. */
export interface SshConfig {
  /** The destination as typed (alias or host). */
  destination: string;
  hostname: string;
  user: string;
  port: number;
  /** Identity files in ssh's order (an explicit -i first), `~` and `%` tokens expanded. */
  identityFiles: string[];
  identitiesOnly: boolean;
  /** ssh-agent socket; undefined: no agent. */
  identityAgent: string | undefined;
  userKnownHostsFiles: string[];
  globalKnownHostsFiles: string[];
  strictHostKeyChecking: StrictHostKeyChecking;
  hostKeyAlias: string | undefined;
  hashKnownHosts: boolean;
  /** Jump hosts as written (`[user@]host[:port]` or ssh:// URIs), first hop first; [] for none. */
  proxyJump: string[];
  /** undefined: none (ssh's default; LazyFS's own request timeout then applies). */
  connectTimeoutMs: number | undefined;
  /** 0: off. */
  serverAliveIntervalMs: number;
  serverAliveCountMax: number;
  batchMode: boolean;
  numberOfPasswordPrompts: number;
  /** `ssh -G` ran (false: OpenSSH's defaults were assumed). */
  fromSsh: boolean;
}

/** How to ask: the command-line options that mirror ssh's. */
export interface SshConfigRequest {
  /** `ssh -F FILE`. */
  configFile?: string;
  /** `ssh -o KEY=VALUE`, in order (the first value of a key wins, as in ssh). */
  options?: string[];
  /** `ssh -i FILE`, tried before the configured ones. */
  identityFiles?: string[];
  /** Options for the destination and its jump hosts alike (host-key policy of LazyFS's flags). */
  commonOptions?: string[];
  /** The ssh binary, default `ssh` on PATH. */
  sshCommand?: string;
}

const DEFAULT_IDENTITIES = [
  "id_rsa",
  "id_ecdsa",
  "id_ecdsa_sk",
  "id_ed25519",
  "id_ed25519_sk",
  "id_xmss",
  "id_dsa",
];

function home(): string {
  try {
    return userInfo().homedir;
  } catch {
    return process.env.HOME ?? "/";
  }
}

function localUser(): string {
  try {
    return userInfo().username;
  } catch {
    return process.env.USER ?? "root";
  }
}

/** `~/x` -> home/x (ssh's tilde_expand for the current user). */
export function expandTilde(path: string, homeDir = home()): string {
  if (path === "~") return homeDir;
  return path.startsWith("~/") ? `${homeDir}${path.slice(1)}` : path;
}

/** ssh's `%` tokens of IdentityFile/IdentityAgent/UserKnownHostsFile, and `~`. */
export function expandTokens(
  text: string,
  c: { hostname: string; user: string; port: number; destination: string; alias?: string },
  homeDir = home(),
): string {
  const local = localHostname();
  const tokens: Record<string, string> = {
    "%": "%",
    d: homeDir,
    h: c.hostname,
    i: String(process.getuid?.() ?? 0),
    k: c.alias ?? c.destination,
    L: local.split(".")[0]!,
    l: local,
    n: c.destination,
    p: String(c.port),
    r: c.user,
    u: localUser(),
  };
  const out = text.replace(/%(.)/g, (m, t: string) => tokens[t] ?? m);
  return expandTilde(out, homeDir);
}

/** `$VAR` / `${VAR}` in IdentityAgent. */
function expandEnv(text: string): string | undefined {
  const m = /^\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?$/.exec(text);
  return m ? process.env[m[1]!] || undefined : text;
}

function yesNo(v: string | undefined, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  return /^(yes|true)$/i.test(v);
}

function seconds(v: string | undefined): number | undefined {
  if (v === undefined || v === "none" || v === "0") return undefined;
  const n = Number(v);
  return Number.isFinite(n) && n > 0 ? n * 1000 : undefined;
}

/** `key value` lines of `ssh -G` (or `-o Key=Value` options) into a multimap, keys lowercased. */
export function parseSshGOutput(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#")) continue;
    const m = /^([A-Za-z0-9]+)(?:\s*=\s*|\s+)(.*)$/.exec(line);
    if (!m) continue;
    const key = m[1]!.toLowerCase();
    const list = out.get(key) ?? [];
    list.push(m[2]!.trim());
    out.set(key, list);
  }
  return out;
}

/** The SshConfig of one host from the key/value pairs `ssh -G` printed. */
export function sshConfigFrom(
  destination: string,
  kv: Map<string, string[]>,
  fromSsh: boolean,
  homeDir = home(),
): SshConfig {
  const one = (k: string) => kv.get(k)?.[0];
  const hostname = one("hostname") ?? destination;
  const user = one("user") ?? localUser();
  const port = Number(one("port") ?? 22);
  const hostKeyAlias = one("hostkeyalias");
  const ctx = {
    hostname,
    user,
    port,
    destination,
    ...(hostKeyAlias ? { alias: hostKeyAlias } : {}),
  };
  const files = (k: string) =>
    (kv.get(k) ?? []).flatMap((v) =>
      v
        .split(/\s+/)
        .filter((f) => f && f !== "none")
        .map((f) => expandTokens(f, ctx, homeDir)),
    );
  const agentText = one("identityagent");
  let identityAgent: string | undefined;
  if (agentText === undefined || agentText === "SSH_AUTH_SOCK") {
    identityAgent = process.env.SSH_AUTH_SOCK || undefined;
  } else if (agentText !== "none") {
    const v = expandEnv(agentText);
    identityAgent = v === undefined ? undefined : expandTokens(v, ctx, homeDir);
  }
  const strict = (one("stricthostkeychecking") ?? "ask").toLowerCase();
  const jump = one("proxyjump");
  return {
    destination,
    hostname,
    user,
    port,
    identityFiles: (kv.get("identityfile") ?? []).map((f) => expandTokens(f, ctx, homeDir)),
    identitiesOnly: yesNo(one("identitiesonly"), false),
    identityAgent,
    userKnownHostsFiles: files("userknownhostsfile"),
    globalKnownHostsFiles: files("globalknownhostsfile"),
    strictHostKeyChecking:
      strict === "true" || strict === "yes"
        ? "yes"
        : strict === "false" || strict === "no" || strict === "off"
          ? "no"
          : strict === "accept-new"
            ? "accept-new"
            : "ask",
    hostKeyAlias,
    hashKnownHosts: yesNo(one("hashknownhosts"), false),
    proxyJump:
      jump && jump !== "none"
        ? jump
            .split(",")
            .map((h) => h.trim())
            .filter(Boolean)
        : [],
    connectTimeoutMs: seconds(one("connecttimeout")),
    serverAliveIntervalMs: seconds(one("serveraliveinterval")) ?? 0,
    serverAliveCountMax: Number(one("serveralivecountmax") ?? 3) || 3,
    batchMode: yesNo(one("batchmode"), false),
    numberOfPasswordPrompts: Number(one("numberofpasswordprompts") ?? 3) || 3,
    fromSsh,
  };
}

/** OpenSSH's defaults (when `ssh` is not installed), with `-o` options and -i on top. */
function defaultsFor(d: Destination, req: SshConfigRequest, homeDir: string) {
  const kv = parseSshGOutput([...(req.commonOptions ?? []), ...(req.options ?? [])].join("\n"));
  const setDefault = (k: string, ...v: string[]) => {
    if (!kv.has(k)) kv.set(k, v);
  };
  if (d.user) kv.set("user", [d.user]);
  if (d.port) kv.set("port", [String(d.port)]);
  setDefault("hostname", d.host);
  const explicit = req.identityFiles ?? [];
  const configured = kv.get("identityfile") ?? [];
  kv.set(
    "identityfile",
    explicit.length + configured.length > 0
      ? [...explicit, ...configured]
      : DEFAULT_IDENTITIES.map((f) => `~/.ssh/${f}`),
  );
  setDefault("userknownhostsfile", `${homeDir}/.ssh/known_hosts ${homeDir}/.ssh/known_hosts2`);
  setDefault("globalknownhostsfile", "/etc/ssh/ssh_known_hosts /etc/ssh/ssh_known_hosts2");
  return kv;
}

function runSshG(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      { timeout: 15_000, maxBuffer: 4 * 1024 * 1024, env: process.env },
      (err, stdout, stderr) => {
        if (err) {
          reject(Object.assign(err, { stderr: String(stderr) }));
          return;
        }
        resolve(String(stdout));
      },
    ).stdin?.end();
  });
}

/** The `ssh -G` argument list for one destination. */
export function sshGArgs(d: Destination, req: SshConfigRequest, extra: string[] = []): string[] {
  const args = ["-G"];
  if (req.configFile) args.push("-F", req.configFile);
  for (const o of [...(req.commonOptions ?? []), ...extra, ...(req.options ?? [])]) {
    args.push("-o", o);
  }
  for (const f of req.identityFiles ?? []) args.push("-i", f);
  if (d.user) args.push("-l", d.user);
  if (d.port) args.push("-p", String(d.port));
  args.push("--", d.host);
  return args;
}

/**
 * Resolves one destination (`text` as the user typed it, or a parsed hop) to its effective
 * configuration. `extra` options come before the user's (ssh: the first value wins).
 */
export async function resolveSshConfig(
  text: string,
  req: SshConfigRequest = {},
  opts: { hop?: boolean; extra?: string[] } = {},
): Promise<SshConfig> {
  const d = parseDestination(text, opts.hop ? { hop: true } : {});
  for (const o of [...(req.commonOptions ?? []), ...(req.options ?? [])]) {
    if (!/^[A-Za-z0-9]+\s*[= ]/.test(o)) {
      throw new UserError(`-o ${JSON.stringify(o)}: expected KEY=VALUE (as for ssh -o)`);
    }
  }
  for (const f of req.identityFiles ?? []) {
    try {
      await access(f);
    } catch (err) {
      throw new UserError(`identity file ${f}: ${errorMessage(err)}`);
    }
  }
  if (req.configFile) {
    try {
      await access(req.configFile);
    } catch (err) {
      throw new UserError(`ssh config file ${req.configFile} (-F): ${errorMessage(err)}`);
    }
  }
  const homeDir = home();
  const cmd = req.sshCommand ?? "ssh";
  const args = sshGArgs(d, req, opts.extra ?? []);
  try {
    const out = await runSshG(cmd, args);
    log.debug("ssh -G", { destination: text, args: args.join(" ") });
    return sshConfigFrom(d.host, parseSshGOutput(out), true, homeDir);
  } catch (err) {
    if (errnoCode(err) === "ENOENT") {
      log.debug(
        `${cmd} (OpenSSH client) not installed: assuming OpenSSH's defaults (~/.ssh/id_*, SSH_AUTH_SOCK, ~/.ssh/known_hosts) and -o options`,
        { destination: text },
      );
      const kv = defaultsFor(d, req, homeDir);
      for (const o of opts.extra ?? []) {
        for (const [k, v] of parseSshGOutput(o)) kv.set(k, v);
      }
      return sshConfigFrom(d.host, kv, false, homeDir);
    }
    const stderr = String((err as { stderr?: string }).stderr ?? "")
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith("Pseudo-terminal"))
      .join("; ");
    throw new UserError(
      `ssh -G ${text}: ${stderr || errorMessage(err)} (the SSH configuration for this destination is not valid)`,
    );
  }
}

/**
 * The whole chain to reach `text`: its jump hosts (each resolved with `ssh -G` too; the first
 * hop with its own ProxyJump, later hops through the previous one), then the destination.
 */
export async function resolveSshChain(
  text: string,
  req: SshConfigRequest = {},
  depth = 0,
  hopExtra: string[] = [],
): Promise<SshConfig[]> {
  if (depth > 8) throw new UserError(`ProxyJump of ${text}: more than 8 levels (a loop?)`);
  const target = await resolveSshConfig(
    text,
    depth === 0 ? req : hopReq(req),
    depth === 0 ? {} : { hop: true, extra: hopExtra },
  );
  if (target.proxyJump.length === 0) return [target];
  const [first, ...rest] = target.proxyJump;
  const chain = await resolveSshChain(first!, req, depth + 1);
  for (const hop of rest) {
    chain.push(await resolveSshConfig(hop, hopReq(req), { hop: true, extra: ["ProxyJump=none"] }));
  }
  return [...chain, target];
}

/** Jump hosts are resolved with the config file but not the destination's -o/-i (as ssh -J). */
function hopReq(req: SshConfigRequest): SshConfigRequest {
  return {
    ...(req.configFile ? { configFile: req.configFile } : {}),
    ...(req.commonOptions ? { commonOptions: req.commonOptions } : {}),
    ...(req.sshCommand ? { sshCommand: req.sshCommand } : {}),
  };
}
