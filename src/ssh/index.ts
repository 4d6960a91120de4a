/**
 * Reaching a host the way the user's OpenSSH does: destinations as `ssh` takes them, the
 * effective configuration from `ssh -G`, ProxyJump chains, identities and typed passphrases,
 * known_hosts and the host-key decision, and prompts on the terminal. Built on ssh2; knows
 * nothing of origins, files or migrations. Imports only common/.
 */
export { resolveSshConfig, type SshConfig, type SshConfigRequest } from "./config.js";
export { connectSshChain, type SshConnectOptions, SshRefusedError } from "./connect.js";
export { type Destination, destinationName, parseDestination } from "./destination.js";
export { knownHostsNameOf } from "./host-key.js";
export { rememberPassphrases, typedPassphrases } from "./identities.js";
export { type ChainOptions, sshChainFor } from "./jump-chain.js";
export {
  checkKnownHosts,
  fingerprint,
  hashHostName,
  hostPortName,
  judgeHostKey,
  keyType,
  readKnownHostsFiles,
} from "./knownhosts.js";
