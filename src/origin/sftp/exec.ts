/** A shell command on the origin over an SSH connection (a session channel of its own). */
import type { Client, ClientChannel } from "ssh2";
import { UserError } from "../../common/errors.js";

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `command` on `client`; resolves with its exit code and output. No exit within
 * `timeoutMs`, or a channel closed without an exit status, is a UserError naming `name`.
 * `onChannel` gets the channel once the command runs (write its stdin, watch its stdout).
 */
export function execOnClient(
  client: Client,
  name: string,
  command: string,
  timeoutMs: number,
  onChannel?: (channel: ClientChannel) => void,
): Promise<ExecResult> {
  const what = `exec ${command.split("\n")[0]!.slice(0, 60)}`;
  return new Promise((resolve, reject) => {
    let stdout = "";
    let stderr = "";
    const timer = setTimeout(() => {
      reject(new UserError(`${name}: ${what}: no exit within ${timeoutMs} ms`));
    }, timeoutMs);
    client.exec(command, (err, stream) => {
      if (err) {
        clearTimeout(timer);
        reject(new UserError(`${name}: ${what}: ${err.message}`, { cause: err }));
        return;
      }
      stream.on("data", (d: Buffer) => {
        stdout += d.toString();
      });
      onChannel?.(stream);
      stream.stderr.on("data", (d: Buffer) => {
        stderr += d.toString();
      });
      stream.on("close", (code: number | null, signal?: string) => {
        clearTimeout(timer);
        if (code === null || code === undefined) {
          reject(
            new UserError(
              `${name}: ${what}: ended without exit status (${signal ?? "connection lost"})`,
            ),
          );
        } else resolve({ code, stdout, stderr });
      });
    });
  });
}
