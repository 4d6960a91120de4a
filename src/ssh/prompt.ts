/**
 * Questions to the user on the terminal, as ssh asks them: a passphrase (no echo) or a yes/no.
 * Only when stdin is a terminal; prompts go to stderr. Questions never overlap.
 */

let queue: Promise<unknown> = Promise.resolve();

/** True when a question can be asked (stdin is a terminal). */
export function canAsk(): boolean {
  return process.stdin.isTTY === true;
}

function serial<T>(fn: () => Promise<T>): Promise<T> {
  const p = queue.then(fn, fn);
  queue = p.catch(() => {});
  return p;
}

/** Reads one line from the terminal; `echo: false` hides what is typed (passphrases). */
export function askLine(question: string, opts: { echo: boolean }): Promise<string | undefined> {
  return serial(
    () =>
      new Promise<string | undefined>((resolve) => {
        const stdin = process.stdin;
        if (!stdin.isTTY) {
          resolve(undefined);
          return;
        }
        // Echo off before the question shows: an answer typed at once is not echoed either.
        const wasRaw = stdin.isRaw;
        stdin.setRawMode(true);
        process.stderr.write(question);
        stdin.resume();
        let text = "";
        const finish = (value: string | undefined) => {
          stdin.off("data", onData);
          stdin.setRawMode(wasRaw);
          stdin.pause();
          process.stderr.write("\n");
          resolve(value);
        };
        const onData = (chunk: Buffer) => {
          for (const ch of chunk.toString("utf8")) {
            if (ch === "\r" || ch === "\n") return finish(text);
            if (ch === "\u0003" || ch === "\u0004") return finish(undefined);
            if (ch === "\u007f" || ch === "\b") {
              if (text.length > 0) {
                text = text.slice(0, -1);
                if (opts.echo) process.stderr.write("\b \b");
              }
              continue;
            }
            if (ch === "\u0015") {
              text = "";
              continue;
            }
            text += ch;
            if (opts.echo) process.stderr.write(ch);
          }
        };
        stdin.on("data", onData);
      }),
  );
}
