import { type OutagePolicy, SftpOrigin, type SftpOriginOptions } from "../origin/index.js";
import { parseDestination } from "../ssh/index.js";
import type { SshOptions } from "./options.js";

/**
 * The SFTP origin for a destination as `ssh` takes it (host, user@host, a Host alias,
 * ssh://user@host[:port]) with the user's SSH options; resolved with `ssh -G` when it first
 * connects. Every command that talks to an origin opens it here. Throws a UserError at once
 * for text `ssh` would not take.
 */
export function openOrigin(
  destination: string,
  ssh: SshOptions,
  outage?: OutagePolicy,
): SftpOrigin {
  return new SftpOrigin(sftpOptions(destination, ssh, outage));
}

/** SFTP connection options for a destination with the user's SSH options. */
export function sftpOptions(
  destination: string,
  ssh: SshOptions,
  outage?: OutagePolicy,
): SftpOriginOptions {
  const d = parseDestination(destination);
  return {
    destination,
    host: d.host,
    ...(d.port ? { port: d.port } : {}),
    ...(d.user ? { username: d.user } : {}),
    ...(ssh.configFile ? { sshConfigFile: ssh.configFile } : {}),
    ...(ssh.options?.length ? { sshOptions: ssh.options } : {}),
    ...(ssh.identityFile ? { identityFile: ssh.identityFile } : {}),
    ...(ssh.knownHostsFile ? { knownHostsFile: ssh.knownHostsFile } : {}),
    ...(ssh.timeoutMs ? { timeoutMs: ssh.timeoutMs } : {}),
    acceptNewHostKey: ssh.acceptNewHostKey ?? false,
    ...(outage ? { outage } : {}),
  };
}

/** Checks that `destination` is one `ssh` takes (UserError naming it otherwise). */
export function checkDestination(destination: string): void {
  parseDestination(destination);
}
