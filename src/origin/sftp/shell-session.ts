/**
 * One long-lived `sh` on the origin that runs short scripts one after another. An exec channel
 * per script costs the server a channel, a fork and a shell start: about 0.1 s, paid by the
 * first read of every file (its exact identity check). Through this shell, every script after
 * the first costs one round trip.
 *
 * Scripts are written to the shell's stdin followed by a line that prints an end marker (a
 * random token); their stdout up to the marker is the result. A script that does not finish
 * in time, or a shell that ends, closes the session: every waiting script fails and the next
 * `run` starts a new shell.
 */
import { randomBytes } from "node:crypto";
import type { Client, ClientChannel } from "ssh2";
import { UserError } from "../../common/errors.js";

interface Pending {
  script: string;
  timeoutMs: number;
  resolve(stdout: string): void;
  reject(err: unknown): void;
}

export class ShellSession {
  private channel?: Promise<ClientChannel>;
  /** The shell once started (the channel promise's value). */
  private current?: ClientChannel;
  private readonly queue: Pending[] = [];
  private busy = false;
  private closed = false;

  constructor(
    private readonly client: Client,
    /** The origin's name, for errors. */
    private readonly name: string,
  ) {}

  /** Starts the shell now, so that the first script does not pay for it. */
  warm(timeoutMs: number): void {
    this.open(timeoutMs).catch(() => {});
  }

  /** Runs `script` (no input of its own); resolves with its stdout. */
  run(script: string, timeoutMs: number): Promise<string> {
    if (this.closed) return Promise.reject(new UserError(`${this.name}: shell session closed`));
    return new Promise((resolve, reject) => {
      this.queue.push({ script, timeoutMs, resolve, reject });
      void this.next();
    });
  }

  close(): void {
    this.closed = true;
    this.drop(new UserError(`${this.name}: shell session closed`));
  }

  private open(timeoutMs: number): Promise<ClientChannel> {
    if (this.channel) return this.channel;
    const opening: Promise<ClientChannel> = new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new UserError(`${this.name}: no shell within ${timeoutMs} ms`)),
        timeoutMs,
      );
      const started = (err: Error | undefined, ch: ClientChannel) => {
        clearTimeout(timer);
        if (err) return reject(new UserError(`${this.name}: exec sh: ${err.message}`));
        if (this.channel !== opening) {
          // Closed or timed out while it started.
          ch.close();
          return reject(new UserError(`${this.name}: shell session closed`));
        }
        this.current = ch;
        ch.stderr.resume();
        ch.on("close", () => {
          if (this.current === ch) this.drop(new UserError(`${this.name}: the shell ended`));
        });
        resolve(ch);
      };
      try {
        this.client.exec("exec sh", started);
      } catch (err) {
        clearTimeout(timer);
        reject(new UserError(`${this.name}: exec sh: ${(err as Error).message}`));
      }
    });
    this.channel = opening;
    opening.catch(() => {
      if (this.channel === opening) this.channel = undefined;
    });
    return opening;
  }

  /** Forgets the current shell (closing it) and fails the script it runs. */
  private drop(err: UserError): void {
    const ch = this.current;
    this.current = undefined;
    this.channel = undefined;
    if (ch) {
      ch.removeAllListeners("data");
      ch.close();
    }
    this.active?.(err);
    if (this.closed) for (const p of this.queue.splice(0)) p.reject(err);
  }

  /** Rejects the script being run (set while one runs). */
  private active?: (err: unknown) => void;

  private async next(): Promise<void> {
    if (this.busy) return;
    const job = this.queue.shift();
    if (!job) return;
    this.busy = true;
    try {
      job.resolve(await this.runOne(job));
    } catch (err) {
      job.reject(err);
    } finally {
      this.busy = false;
      void this.next();
    }
  }

  private async runOne(job: Pending): Promise<string> {
    const ch = await this.open(job.timeoutMs);
    const marker = `__lazyfs_${randomBytes(12).toString("hex")}__`;
    return new Promise<string>((resolve, reject) => {
      let out = "";
      const finish = (err: unknown, stdout?: string) => {
        clearTimeout(timer);
        ch.removeListener("data", onData);
        this.active = undefined;
        if (err) reject(err);
        else resolve(stdout ?? "");
      };
      const timer = setTimeout(() => {
        finish(new UserError(`${this.name}: shell script: no answer within ${job.timeoutMs} ms`));
        // Its late output would be taken for the next script's: start over.
        if (this.current === ch) this.drop(new UserError(`${this.name}: shell session timed out`));
      }, job.timeoutMs);
      // The marker is printed on a line of its own after a newline of its own (the script's
      // output need not end with one); neither is part of the result.
      const tail = `\n${marker}\n`;
      const onData = (d: Buffer) => {
        out += d.toString();
        if (out.endsWith(tail)) finish(undefined, out.slice(0, out.length - tail.length));
      };
      this.active = (err) => finish(err);
      ch.on("data", onData);
      // The script runs in a subshell: an `exit` or `cd` in it cannot end or move the session.
      ch.write(`(\n${job.script}\n) </dev/null\nprintf '\\n%s\\n' '${marker}'\n`);
    });
  }
}
