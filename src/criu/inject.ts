/**
 * Making one system call inside a stopped process, the way CRIU's compel does it: attach with
 * ptrace, save the registers, the signal mask and a few bytes of code and stack, put a
 * `syscall; int3` at the instruction pointer, run it, read the result, put everything back and
 * detach. Used to give a restored process back a POSIX lock (only the process itself can own
 * one). x86_64 only; ptrace, waitpid and the errno come through koffi (Node has no ptrace).
 */
import { closeSync, openSync, readSync, writeSync } from "node:fs";
import { errorMessage, UserError } from "../common/errors.js";
import { errnoName, loadLibc } from "../common/libc.js";

const PTRACE_GETREGS = 12;
const PTRACE_SETREGS = 13;
const PTRACE_CONT = 7;
const PTRACE_DETACH = 17;
const PTRACE_SEIZE = 0x4206;
const PTRACE_INTERRUPT = 0x4207;
const PTRACE_GETSIGMASK = 0x420a;
const PTRACE_SETSIGMASK = 0x420b;
const WALL = 0x40000000;
const WNOHANG = 1;
const STOP_WAIT_MS = 10_000;
const nap = new Int32Array(new SharedArrayBuffer(4));
const SIGTRAP = 5;
const SIGSTOP = 19;

/** struct user_regs_struct of x86_64: 27 registers of 8 bytes; the ones used here. */
const REGS_SIZE = 27 * 8;
const RAX = 10 * 8;
const RDX = 12 * 8;
const RSI = 13 * 8;
const RDI = 14 * 8;
const ORIG_RAX = 15 * 8;
const RIP = 16 * 8;
const RSP = 19 * 8;

/** `syscall; int3` */
const CODE = Buffer.from([0x0f, 0x05, 0xcc]);

type Ptrace = (req: number, pid: number, addr: number, data: number) => number;
type PtraceBuf = (req: number, pid: number, addr: number, data: Buffer) => number;
type Waitpid = (pid: number, status: Buffer, options: number) => number;

interface Libc {
  ptrace: Ptrace;
  ptraceBuf: PtraceBuf;
  waitpid: Waitpid;
  errno: () => number;
}

let libc: Libc | string | undefined;

function load(): Libc | string {
  if (process.platform !== "linux" || process.arch !== "x64") {
    return `only on Linux x86_64 (this is ${process.platform} ${process.arch})`;
  }
  const shared = loadLibc();
  if (typeof shared === "string") return shared;
  try {
    const c = shared.lib;
    return {
      ptrace: c.func("ptrace", "long", ["int", "int", "uintptr_t", "uintptr_t"]) as Ptrace,
      ptraceBuf: c.func("ptrace", "long", ["int", "int", "uintptr_t", "void *"]) as PtraceBuf,
      waitpid: c.func("waitpid", "int", ["int", "void *", "int"]) as Waitpid,
      errno: shared.errno,
    };
  } catch (err) {
    return `koffi: ${errorMessage(err)}`;
  }
}

/** One system call to make in another process, with bytes to put in its memory first. */
export interface Syscall {
  nr: number;
  /** Up to three arguments; `"data"` stands for the address where `data` was put. */
  args: (number | "data")[];
  data?: Buffer;
}

/**
 * Makes `call` in process `pid` (its main thread) and returns the call's result (a negative
 * errno on failure). The process must be stopped (criu restore --leave-stopped) and is left
 * stopped. Throws a UserError when the process cannot be attached or its state restored.
 */
export function injectSyscall(pid: number, call: Syscall): number {
  libc ??= load();
  if (typeof libc === "string") throw new UserError(`cannot call into process ${pid}: ${libc}`);
  const c = libc;
  const fail = (what: string): never => {
    throw new UserError(`process ${pid}: ${what}: ${errnoName(c.errno())}`);
  };
  const status = Buffer.alloc(4);
  /** Waits for the next stop; the stop signal, and the ptrace event in the high bits. */
  const waitStop = (): { sig: number; event: number } => {
    // Polled, never blocking: a process that does not stop must not hang the restore.
    const until = Date.now() + STOP_WAIT_MS;
    for (;;) {
      const r = c.waitpid(pid, status, WALL | WNOHANG);
      if (r === pid) break;
      if (r < 0) fail("waitpid");
      if (Date.now() > until) throw new UserError(`process ${pid} did not stop for ptrace`);
      Atomics.wait(nap, 0, 0, 1);
    }
    const s = status.readInt32LE(0);
    if ((s & 0xff) !== 0x7f) throw new UserError(`process ${pid} ended while being relocked`);
    return { sig: (s >> 8) & 0xff, event: s >>> 16 };
  };
  if (c.ptrace(PTRACE_SEIZE, pid, 0, 0) !== 0) fail("PTRACE_SEIZE");
  let mem: number | undefined;
  try {
    if (c.ptrace(PTRACE_INTERRUPT, pid, 0, 0) !== 0) fail("PTRACE_INTERRUPT");
    waitStop();
    const saved = Buffer.alloc(REGS_SIZE);
    if (c.ptraceBuf(PTRACE_GETREGS, pid, 0, saved) !== 0) fail("PTRACE_GETREGS");
    const mask = Buffer.alloc(8);
    if (c.ptraceBuf(PTRACE_GETSIGMASK, pid, 8, mask) !== 0) fail("PTRACE_GETSIGMASK");
    // No handler may run in between: every signal that can be blocked stays pending.
    if (c.ptraceBuf(PTRACE_SETSIGMASK, pid, 8, Buffer.alloc(8, 0xff)) !== 0) {
      fail("PTRACE_SETSIGMASK");
    }
    const rip = Number(saved.readBigUInt64LE(RIP));
    // Below the red zone (128 bytes under the stack pointer), 16-aligned.
    const scratch = Number((saved.readBigUInt64LE(RSP) - 256n) & ~15n);
    mem = openSync(`/proc/${pid}/mem`, "r+");
    const oldCode = peek(mem, rip, CODE.length);
    const data = call.data ?? Buffer.alloc(0);
    const oldData = peek(mem, scratch, data.length);
    try {
      poke(mem, rip, CODE);
      poke(mem, scratch, data);
      const regs = Buffer.from(saved);
      regs.writeBigInt64LE(BigInt(call.nr), RAX);
      regs.writeBigInt64LE(-1n, ORIG_RAX);
      const argAt = [RDI, RSI, RDX];
      call.args.forEach((a, i) => {
        regs.writeBigInt64LE(BigInt(a === "data" ? scratch : a), argAt[i]!);
      });
      if (c.ptraceBuf(PTRACE_SETREGS, pid, 0, regs) !== 0) fail("PTRACE_SETREGS");
      let result: number | undefined;
      for (let stops = 0; result === undefined; stops++) {
        if (stops > 16) throw new UserError(`process ${pid}: the injected call did not return`);
        if (c.ptrace(PTRACE_CONT, pid, 0, 0) !== 0) fail("PTRACE_CONT");
        const stop = waitStop();
        // A group stop (the pending SIGSTOP) or that SIGSTOP itself: go on; it is put back
        // at detach.
        if (stop.sig !== SIGTRAP || stop.event !== 0) continue;
        const after = Buffer.alloc(REGS_SIZE);
        if (c.ptraceBuf(PTRACE_GETREGS, pid, 0, after) !== 0) fail("PTRACE_GETREGS");
        result = Number(after.readBigInt64LE(RAX));
      }
      return result;
    } finally {
      poke(mem, rip, oldCode);
      poke(mem, scratch, oldData);
      if (c.ptraceBuf(PTRACE_SETREGS, pid, 0, saved) !== 0) fail("PTRACE_SETREGS (restore)");
      if (c.ptraceBuf(PTRACE_SETSIGMASK, pid, 8, mask) !== 0) fail("PTRACE_SETSIGMASK (restore)");
    }
  } finally {
    if (mem !== undefined) closeSync(mem);
    // Detached stopped, as it was found.
    c.ptrace(PTRACE_DETACH, pid, 0, SIGSTOP);
  }
}

function peek(fd: number, at: number, n: number): Buffer {
  const b = Buffer.alloc(n);
  if (n > 0 && readSync(fd, b, 0, n, at) !== n) throw new UserError(`short read at ${at}`);
  return b;
}

function poke(fd: number, at: number, b: Buffer): void {
  if (b.length > 0 && writeSync(fd, b, 0, b.length, at) !== b.length) {
    throw new UserError(`short write at ${at}`);
  }
}
