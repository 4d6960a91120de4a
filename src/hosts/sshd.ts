/**
 * A throwaway OpenSSH server for tests, simulated hosts and the demo.
 *
 *   const sshd = await startSshd({ address?, port?, commandPrefix?, dir? });
 *   // sshd.host, sshd.port, sshd.user ("root"), sshd.identityFile, sshd.knownHostsFile,
 *   // sshd.hostKeyLine, sshd.dir
 *   await sshd.stop();
 *
 * It generates a temporary ed25519 host key and client key (ssh-keygen), writes an sshd_config
 * that admits only that client key for root, runs `/usr/sbin/sshd -D -e -f config` (optionally
 * through `commandPrefix`, e.g. `nsenter --net=/run/netns/x --`), and resolves once sshd logs
 * "Server listening". `knownHostsFile` holds the host key for `[host]:port`.
 */
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { errorMessage, UserError } from "../common/errors.js";

const run = promisify(execFile);

export interface SshdOptions {
  /** Listen address, default 127.0.0.1. */
  address?: string;
  /** Listen port, default a free port. */
  port?: number;
  /** Command run in front of sshd, e.g. ["nsenter", "--net=/run/netns/x", "--"]. */
  commandPrefix?: string[];
  /** Where keys, config and pid file go; default a new temporary directory (removed on stop). */
  dir?: string;
}

export interface SshdHandle {
  host: string;
  port: number;
  user: "root";
  /** Private key admitted by this sshd. */
  identityFile: string;
  /** known_hosts file holding this sshd's host key for `[host]:port`. */
  knownHostsFile: string;
  /** The known_hosts line (`[host]:port ssh-ed25519 AAAA...`). */
  hostKeyLine: string;
  dir: string;
  stop(): Promise<void>;
}

const SSHD = "/usr/sbin/sshd";
const START_TIMEOUT_MS = 15_000;

async function freePort(address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, address, () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

/** `[host]:port` as known_hosts and ssh spell it (plain host for port 22). */
export function knownHostsName(host: string, port: number): string {
  return port === 22 ? host : `[${host}]:${port}`;
}

export async function startSshd(opts: SshdOptions = {}): Promise<SshdHandle> {
  const address = opts.address ?? "127.0.0.1";
  const ownDir = opts.dir === undefined;
  const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), "lazyfs-sshd-")));
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await mkdir("/run/sshd", { recursive: true, mode: 0o755 });
  const port =
    opts.port ??
    (opts.commandPrefix ? 20000 + Math.floor(Math.random() * 40000) : await freePort(address));

  const hostKey = join(dir, "ssh_host_ed25519_key");
  const identityFile = join(dir, "id_ed25519");
  await rm(hostKey, { force: true });
  await rm(`${hostKey}.pub`, { force: true });
  await rm(identityFile, { force: true });
  await rm(`${identityFile}.pub`, { force: true });
  try {
    await run("ssh-keygen", ["-q", "-t", "ed25519", "-N", "", "-C", "lazyfs-host", "-f", hostKey]);
    await run("ssh-keygen", [
      "-q",
      "-t",
      "ed25519",
      "-N",
      "",
      "-C",
      "lazyfs-client",
      "-f",
      identityFile,
    ]);
  } catch (err) {
    throw new UserError(`sshd: ssh-keygen failed in ${dir}: ${errorMessage(err)}`, { cause: err });
  }
  const hostPub = (await readFile(`${hostKey}.pub`, "utf8")).trim().split(/\s+/);
  const hostKeyLine = `${knownHostsName(address, port)} ${hostPub[0]} ${hostPub[1]}`;
  const knownHostsFile = join(dir, "known_hosts");
  await writeFile(knownHostsFile, `${hostKeyLine}\n`, { mode: 0o600 });
  const authorizedKeys = join(dir, "authorized_keys");
  await writeFile(authorizedKeys, await readFile(`${identityFile}.pub`, "utf8"), { mode: 0o600 });
  const config = join(dir, "sshd_config");
  await writeFile(
    config,
    [
      `Port ${port}`,
      `ListenAddress ${address}`,
      `HostKey ${hostKey}`,
      `PidFile ${join(dir, "sshd.pid")}`,
      `AuthorizedKeysFile ${authorizedKeys}`,
      "PermitRootLogin prohibit-password",
      "PubkeyAuthentication yes",
      "PasswordAuthentication no",
      "KbdInteractiveAuthentication no",
      "StrictModes no",
      "UsePAM no",
      "UseDNS no",
      "MaxStartups 100",
      "MaxSessions 100",
      "Subsystem sftp internal-sftp",
      "LogLevel INFO",
      // A login shell that sources pyenv's init runs `pyenv rehash`, which waits 60 s for a
      // lock that a killed shell (a test cuts links and kills sessions) may have left behind:
      // every later command over SSH would stall. One try is enough for a test host.
      "SetEnv PYENV_REHASH_TIMEOUT=0",
      "",
    ].join("\n"),
    { mode: 0o600 },
  );

  const argv = [...(opts.commandPrefix ?? []), SSHD, "-D", "-e", "-f", config];
  const child: ChildProcess = spawn(argv[0]!, argv.slice(1), {
    stdio: ["ignore", "ignore", "pipe"],
  });
  let stderr = "";
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(
        new UserError(
          `sshd: no "Server listening" on ${address}:${port} after ${START_TIMEOUT_MS} ms: ${stderr.trim()}`,
        ),
      );
    }, START_TIMEOUT_MS);
    const onData = (chunk: Buffer) => {
      stderr += chunk.toString();
      if (stderr.includes("Server listening")) {
        clearTimeout(timer);
        resolve();
      }
    };
    child.stderr?.on("data", onData);
    child.once("error", (err) => {
      clearTimeout(timer);
      reject(new UserError(`sshd: cannot run ${argv.join(" ")}: ${err.message}`, { cause: err }));
    });
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(
        new UserError(
          `sshd on ${address}:${port} exited (${code ?? signal}) before listening: ${stderr.trim()}`,
        ),
      );
    });
  }).catch(async (err) => {
    if (ownDir) await rm(dir, { recursive: true, force: true });
    throw err;
  });
  // Keep draining stderr so sshd never blocks on a full pipe.
  child.stderr?.removeAllListeners("data");
  child.stderr?.resume();
  child.removeAllListeners("exit");

  let stopped = false;
  return {
    host: address,
    port,
    user: "root",
    identityFile,
    knownHostsFile,
    hostKeyLine,
    dir,
    async stop() {
      if (stopped) return;
      stopped = true;
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
        await exited;
        clearTimeout(timer);
      }
      if (ownDir) await rm(dir, { recursive: true, force: true });
    },
  };
}
