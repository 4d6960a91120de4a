/**
 * From an SFTP origin's options to the resolved connection chain: LazyFS's own flags become
 * the ssh options they stand for (`-i` first, `--known-hosts` = UserKnownHostsFile,
 * `--accept-new-host-key` = StrictHostKeyChecking accept-new, an explicit agent =
 * IdentityAgent), then `ssh -G` resolves the destination and its jump hosts.
 */
import { resolveSshChain, type SshConfig, type SshConfigRequest } from "./config.js";

export interface ChainOptions {
  destination?: string;
  host: string;
  port: number;
  username: string;
  identityFile?: string;
  agent?: string;
  knownHostsFile?: string;
  acceptNewHostKey?: boolean;
  sshConfigFile?: string;
  sshOptions?: string[];
}

/** A value for `-o KEY=VALUE`, quoted as ssh's config parser reads it. */
function optionValue(v: string): string {
  return /[\s"]/.test(v) ? `"${v.replace(/"/g, '\\"')}"` : v;
}

/** The SshConfigRequest LazyFS's options stand for. */
export function sshRequestFor(o: ChainOptions, noAgent: boolean): SshConfigRequest {
  const common: string[] = [];
  if (o.knownHostsFile) common.push(`UserKnownHostsFile=${optionValue(o.knownHostsFile)}`);
  if (o.acceptNewHostKey) common.push("StrictHostKeyChecking=accept-new");
  if (noAgent) common.push("IdentityAgent=none");
  else if (o.agent) common.push(`IdentityAgent=${optionValue(o.agent)}`);
  return {
    ...(o.sshConfigFile ? { configFile: o.sshConfigFile } : {}),
    ...(o.sshOptions?.length ? { options: o.sshOptions } : {}),
    ...(o.identityFile ? { identityFiles: [o.identityFile] } : {}),
    ...(common.length ? { commonOptions: common } : {}),
  };
}

/** The destination as ssh takes it (the options' own, or `ssh://user@host:port`). */
export function destinationOf(o: ChainOptions): string {
  if (o.destination) return o.destination;
  const host = o.host.includes(":") ? `[${o.host}]` : o.host;
  return `ssh://${o.username}@${host}:${o.port}`;
}

/** Jump hosts first, the destination last. */
export function sshChainFor(o: ChainOptions, noAgent: boolean): Promise<SshConfig[]> {
  return resolveSshChain(destinationOf(o), sshRequestFor(o, noAgent));
}
