/**
 * SSH failures that no retry can mend: an identity file that cannot be used (encrypted and no
 * passphrase, not a private key at all). Reconnecting with backoff would only repeat them (five
 * times over seconds); they become one clear line at once.
 */
import { errorMessage, UserError } from "../common/errors.js";

/** The UserError for a permanent failure, or undefined when a retry may help. */
export function permanentSshError(
  host: string,
  identityFile: string | undefined,
  err: unknown,
): UserError | undefined {
  const message = errorMessage(err);
  const m = /^Cannot parse privateKey: (.*)$/s.exec(message);
  if (!m) return undefined;
  const key = identityFile ?? "the private key";
  const why = /encrypted/i.test(m[1]!)
    ? "it is encrypted and LazyFS takes no passphrase (load it into ssh-agent, or use an unencrypted key)"
    : `it is not a usable private key (${m[1]})`;
  return new UserError(`${host}: cannot use identity file ${key}: ${why}`, { cause: err });
}
