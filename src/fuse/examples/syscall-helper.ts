/**
 * Syscalls Node has no binding for, made by one long-lived `python3` child: mknod(2) of
 * fifos, sockets and device nodes, utimensat(2) to the nanosecond (Node's utimes takes
 * seconds as a double, rounds to microseconds and cannot set times before 1970), and
 * renameat2(2) with flags. Requests go
 * as JSON lines and are answered in order with an errno (0 = success).
 */
import { type ChildProcessByStdio, spawn } from "node:child_process";
import type { Readable, Writable } from "node:stream";
import { FuseError } from "../filesystem.js";

const SCRIPT = `
import ctypes, json, os, sys
libc = ctypes.CDLL(None, use_errno=True)
for line in sys.stdin:
    a = json.loads(line)
    try:
        if a[0] == "mknod":
            os.mknod(a[1], a[2], a[3])
        elif a[0] == "utime":
            os.utime(a[1], ns=(int(a[2]), int(a[3])), follow_symlinks=a[4])
        elif a[0] == "rename":
            if libc.renameat2(-100, os.fsencode(a[1]), -100, os.fsencode(a[2]), a[3]) != 0:
                raise OSError(ctypes.get_errno(), "renameat2")
        r = 0
    except OSError as e:
        r = e.errno or 5
    sys.stdout.write("%d\\n" % r)
    sys.stdout.flush()
`;

type Child = ChildProcessByStdio<Writable, Readable, null>;

export class SyscallHelper {
  private child: Child | undefined;
  private readonly waiting: { resolve: () => void; reject: (e: Error) => void }[] = [];
  private pending = "";

  private start(): Child {
    const c = spawn("python3", ["-c", SCRIPT], { stdio: ["pipe", "pipe", "inherit"] });
    c.stdout.setEncoding("utf8");
    c.stdout.on("data", (d: string) => {
      this.pending += d;
      for (let nl = this.pending.indexOf("\n"); nl >= 0; nl = this.pending.indexOf("\n")) {
        const errno = Number(this.pending.slice(0, nl));
        this.pending = this.pending.slice(nl + 1);
        const w = this.waiting.shift();
        if (errno === 0) w?.resolve();
        else w?.reject(Object.assign(new Error(`errno ${errno}`), { errno }));
        if (this.waiting.length === 0) this.idle(c, true);
      }
    });
    const fail = () => {
      if (this.child === c) this.child = undefined;
      this.pending = "";
      for (const w of this.waiting.splice(0)) w.reject(new FuseError("EIO", "python3 helper died"));
    };
    c.on("error", fail);
    c.on("exit", fail);
    return c;
  }

  /** An idle helper must not keep the process alive. */
  private idle(c: Child, idle: boolean): void {
    for (const h of [c, c.stdin, c.stdout] as { ref?(): void; unref?(): void }[])
      idle ? h.unref?.() : h.ref?.();
  }

  private call(args: unknown[]): Promise<void> {
    this.child ??= this.start();
    const c = this.child;
    this.idle(c, false);
    return new Promise((resolve, reject) => {
      this.waiting.push({ resolve, reject });
      c.stdin.write(`${JSON.stringify(args)}\n`);
    });
  }

  mknod(path: string, mode: number, rdev: number): Promise<void> {
    return this.call(["mknod", path, mode, rdev]);
  }

  /** Sets both times, in nanoseconds since the epoch; follows a final symlink if asked. */
  utimes(path: string, atimeNs: bigint, mtimeNs: bigint, follow: boolean): Promise<void> {
    return this.call(["utime", path, String(atimeNs), String(mtimeNs), follow]);
  }

  /** renameat2 with RENAME_NOREPLACE (1), RENAME_EXCHANGE (2) or RENAME_WHITEOUT (4). */
  rename(from: string, to: string, flags: number): Promise<void> {
    return this.call(["rename", from, to, flags]);
  }

  close(): void {
    this.child?.stdin.end();
    this.child = undefined;
  }
}
