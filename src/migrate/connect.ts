import { SftpOrigin, type SftpOriginOptions } from "../origin/index.js";
import type { SshOptions } from "./options.js";
import { parseOriginUrl } from "./url.js";

/** The SFTP origin for an `ssh://` URL with the user's SSH options. */
export function openOrigin(url: string, ssh: SshOptions): SftpOrigin {
  return new SftpOrigin(sftpOptions(url, ssh));
}

/** SFTP connection options for an `ssh://` URL with the user's SSH options. */
export function sftpOptions(url: string, ssh: SshOptions): SftpOriginOptions {
  const a = parseOriginUrl(url);
  return {
    host: a.host,
    port: a.port,
    username: a.user,
    ...(ssh.identityFile ? { identityFile: ssh.identityFile } : {}),
    ...(ssh.knownHostsFile ? { knownHostsFile: ssh.knownHostsFile } : {}),
    ...(ssh.timeoutMs ? { timeoutMs: ssh.timeoutMs } : {}),
    acceptNewHostKey: ssh.acceptNewHostKey ?? false,
  };
}
