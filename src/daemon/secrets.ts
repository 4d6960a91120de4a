/**
 * Passphrases typed for encrypted SSH keys, handed from the command that asked for them to
 * the LazyFS daemon it starts (detached, with no terminal to ask on): written once to the
 * daemon's stdin as JSON, never to disk or the environment, kept only in the daemon's memory.
 */
import type { StdioNull, StdioPipe } from "node:child_process";
import type { Writable } from "node:stream";
import { logger } from "../common/log.js";
import { rememberPassphrases, typedPassphrases } from "../ssh/index.js";

const log = logger("migrate/secrets");
/** Set in the daemon's environment when its stdin carries passphrases. */
const FLAG = "LAZYFS_SECRETS_ON_STDIN";

/** The environment and stdin text that carry the passphrases known here to a child. */
export function secretsPayload(): { env: Record<string, string>; stdin?: string } {
  const secrets = typedPassphrases();
  if (Object.keys(secrets).length === 0) return { env: {} };
  return { env: { [FLAG]: "1" }, stdin: JSON.stringify(secrets) };
}

/** stdin and environment for a daemon about to be spawned. */
export function secretsForChild(): {
  stdin: StdioPipe | StdioNull;
  env: Record<string, string>;
  send(stdin: Writable | null): void;
} {
  const payload = secretsPayload();
  if (payload.stdin === undefined) return { stdin: "ignore", env: {}, send: () => {} };
  return {
    stdin: "pipe",
    env: payload.env,
    send: (stdin) => {
      stdin?.on("error", () => {});
      stdin?.end(payload.stdin);
    },
  };
}

/** In the supervisor and the daemon: takes the passphrases the parent sent, if any. */
export async function receiveSecrets(): Promise<void> {
  if (process.env[FLAG] !== "1") return;
  delete process.env[FLAG];
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  try {
    rememberPassphrases(
      JSON.parse(Buffer.concat(chunks).toString("utf8")) as Record<string, string>,
    );
  } catch {
    log.warn("the passphrases handed over by the parent process could not be read");
  }
}
