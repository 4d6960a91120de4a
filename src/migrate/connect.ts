import { type OutagePolicy, SftpOrigin } from "../origin/index.js";
import type { SshOptions } from "./options.js";
import { parseOriginUrl } from "./url.js";

/** The SFTP origin for an `ssh://` URL with the user's SSH options. */
export function openOrigin(url: string, ssh: SshOptions, outage?: OutagePolicy): SftpOrigin {
  const a = parseOriginUrl(url);
  return new SftpOrigin({
    host: a.host,
    port: a.port,
    username: a.user,
    ...(ssh.identityFile ? { identityFile: ssh.identityFile } : {}),
    ...(ssh.knownHostsFile ? { knownHostsFile: ssh.knownHostsFile } : {}),
    ...(ssh.timeoutMs ? { timeoutMs: ssh.timeoutMs } : {}),
    acceptNewHostKey: ssh.acceptNewHostKey ?? false,
    ...(outage ? { outage } : {}),
  });
}
