/**
 * The in-memory example mounted for real, driven by syscalls from other processes.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import {
  FuseError,
  MemoryFileSystem,
  type Mount,
  type OpenReply,
  type RequestContext,
} from "../../src/fuse/index.js";
import { py, run, Scratch, sha256 } from "./helpers.js";

const scratch = new Scratch();
after(() => scratch.cleanup());

/** A memory FS with files that misbehave on purpose. */
class Faulty extends MemoryFileSystem {
  interrupted = 0;
  /** WRITE requests to "slow-write", and how many of them were interrupted. */
  slowWrites = 0;
  slowWritesInterrupted = 0;
  override async open(ino: number, flags: number): Promise<OpenReply> {
    // Direct I/O makes READ and WRITE synchronous requests, which the kernel can interrupt.
    const name = this.nameOf(ino);
    return {
      ...(await super.open(ino, flags)),
      directIo: name === "slow" || name === "slow-write",
    };
  }

  /** "slow-write" takes 1 s (an interrupt does not stop it) and then takes effect. */
  override async write(
    ino: number,
    fh: number,
    offset: number,
    data: Buffer,
    ctx?: RequestContext,
  ): Promise<number> {
    if (this.nameOf(ino) === "slow-write") {
      this.slowWrites++;
      await new Promise((r) => setTimeout(r, 1000));
      if (ctx?.signal.aborted) this.slowWritesInterrupted++;
    }
    return super.write(ino, fh, offset, data);
  }

  override async read(
    ino: number,
    fh: number,
    offset: number,
    size: number,
    ctx?: RequestContext,
  ): Promise<Buffer> {
    const name = this.nameOf(ino);
    if (name === "boom") throw new Error("handler bug (expected in this test)");
    if (name === "denied") throw new FuseError("EACCES");
    if (name === "errno-code") throw Object.assign(new Error("x"), { code: "EROFS" });
    if (name === "slow" && ctx) {
      const signal = ctx.signal;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 10_000); // never hang the suite if no interrupt comes
        signal.addEventListener("abort", () => {
          clearTimeout(timer);
          resolve();
        });
      });
      if (signal.aborted) this.interrupted++;
      throw signal.reason ?? new FuseError("ETIMEDOUT");
    }
    return super.read(ino, fh, offset, size);
  }

  nameOf(ino: number): string | undefined {
    for (const [name, i] of this.nodes.get(1)?.children ?? []) if (i === ino) return name;
    return undefined;
  }
}

describe("memory file system over FUSE", () => {
  let m: Mount;
  let mem: Faulty;
  let dir: string;

  before(async () => {
    mem = new Faulty({
      openReply: { keepCache: true },
      attrTimeoutMs: 60_000,
      entryTimeoutMs: 60_000,
    });
    for (const n of ["boom", "denied", "errno-code", "slow", "slow-write"])
      mem.addFile(n, "data\n");
    const big = mem.addDir("big");
    assert.ok(big > 1);
    for (let i = 0; i < 3000; i++) mem.addFile(`big/entry-with-a-longish-name-${i}`, String(i));
    m = await scratch.mount("mem", mem);
    dir = m.mountpoint;
  });

  test("writes and reads at odd offsets and sizes match a model", async () => {
    const model = Buffer.alloc(0);
    let expected = model;
    const ops: [number, number][] = [
      [0, 1],
      [4095, 3],
      [12_345, 100_001],
      [1_048_575, 2_097_153],
      [7, 4096 * 3 + 1],
    ];
    const script = `
import os, sys, base64
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)
for spec in sys.argv[2:]:
    off, hexseed, n = spec.split(":")
    data = (bytes.fromhex(hexseed) * (int(n) // 16 + 1))[: int(n)]
    assert os.pwrite(fd, data, int(off)) == int(n)
os.close(fd)
`;
    const args: string[] = [];
    for (const [off, n] of ops) {
      const seed = randomBytes(16);
      const data = Buffer.concat(Array(Math.ceil(n / 16) + 1).fill(seed)).subarray(0, n);
      if (off + n > expected.length)
        expected = Buffer.concat([expected, Buffer.alloc(off + n - expected.length)]);
      data.copy(expected, off);
      args.push(`${off}:${seed.toString("hex")}:${n}`);
    }
    const w = await py(script, path.join(dir, "odd.bin"), ...args);
    assert.equal(w.code, 0, w.stderr);
    const sum = await run("sha256sum", [path.join(dir, "odd.bin")]);
    assert.equal(sum.stdout.split(" ")[0], sha256(expected));
    // Reads at odd offsets through dd.
    const dd = await run("dd", [
      `if=${path.join(dir, "odd.bin")}`,
      "bs=777",
      "skip=13",
      "count=2000",
      "status=none",
    ]);
    assert.equal(dd.code, 0);
    const r = await py(
      "import os,sys\nfd=os.open(sys.argv[1],os.O_RDONLY)\nsys.stdout.write(os.pread(fd, 5000, 1048570).hex())",
      path.join(dir, "odd.bin"),
    );
    assert.equal(r.stdout, expected.subarray(1_048_570, 1_048_570 + 5000).toString("hex"));
  });

  test("truncate, fsync, stat", async () => {
    const f = path.join(dir, "t.txt");
    const r = await py(
      `import os,sys
fd=os.open(sys.argv[1], os.O_RDWR|os.O_CREAT, 0o600)
os.write(fd, b"0123456789")
os.fsync(fd)
os.ftruncate(fd, 4)
os.truncate(sys.argv[1], 6)
os.close(fd)
st=os.stat(sys.argv[1])
print(st.st_size, oct(st.st_mode & 0o777), open(sys.argv[1],"rb").read().hex())
os.chmod(sys.argv[1], 0o640)
os.utime(sys.argv[1], (1000000000, 1234567890))
st=os.stat(sys.argv[1])
print(oct(st.st_mode & 0o777), int(st.st_mtime))`,
      f,
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      r.stdout,
      `6 0o600 ${Buffer.from("0123\0\0").toString("hex")}\n0o640 1234567890\n`,
    );
  });

  test("mmap read and write", async () => {
    const f = path.join(dir, "mm.bin");
    const r = await py(
      `import mmap,os,sys
with open(sys.argv[1], "wb") as fh: fh.write(b"a" * 10000)
with open(sys.argv[1], "r+b") as fh:
    mm = mmap.mmap(fh.fileno(), 0)
    assert mm[9000:9003] == b"aaa"
    mm[5000:5005] = b"HELLO"
    mm.flush()
    mm.close()
print(open(sys.argv[1],"rb").read()[4998:5007].decode())`,
      f,
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout, "aaHELLOaa\n");
  });

  test("flock excludes a second process", async () => {
    const f = path.join(dir, "lock");
    fs.writeFileSync(path.join(scratch.dir, "dummy"), "");
    const holder = spawn("python3", [
      "-c",
      "import fcntl,sys\nf=open(sys.argv[1],'w')\nfcntl.flock(f, fcntl.LOCK_EX)\nprint('locked',flush=True)\nsys.stdin.read()",
      f,
    ]);
    scratch.track(holder);
    await new Promise<void>((res) => holder.stdout.once("data", () => res()));
    const r = await py(
      "import fcntl,sys\nf=open(sys.argv[1],'w')\ntry:\n  fcntl.flock(f, fcntl.LOCK_EX|fcntl.LOCK_NB); print('got')\nexcept BlockingIOError: print('busy')",
      f,
    );
    holder.stdin.end();
    await new Promise((res) => holder.once("exit", res));
    assert.equal(r.stdout, "busy\n");
    const again = await py(
      "import fcntl,sys\nf=open(sys.argv[1],'w')\nfcntl.flock(f, fcntl.LOCK_EX|fcntl.LOCK_NB); print('got')",
      f,
    );
    assert.equal(again.stdout, "got\n");
  });

  test("readdir of a large directory lists every entry", async () => {
    const r = await py(
      "import os,sys\nprint('\\n'.join(sorted(os.listdir(sys.argv[1]))))",
      path.join(dir, "big"),
    );
    const want = Array.from({ length: 3000 }, (_, i) => `entry-with-a-longish-name-${i}`).sort();
    assert.deepEqual(r.stdout.trim().split("\n"), want);
    const ls = await run("ls", ["-la", path.join(dir, "big")]);
    assert.equal(ls.stdout.trim().split("\n").length, 3000 + 3); // total, ., ..
  });

  test("32 concurrent readers get the same bytes", async () => {
    const data = randomBytes(3 << 20);
    mem.addFile("shared.bin", data);
    const runs = await Promise.all(
      Array.from({ length: 32 }, () => run("sha256sum", [path.join(dir, "shared.bin")])),
    );
    for (const r of runs) assert.equal(r.stdout.split(" ")[0], sha256(data));
  });

  test("errno mapping: ENOENT, EEXIST, ENOTEMPTY, thrown codes, handler bugs", async () => {
    const r = await py(
      `import os,sys,errno
d=sys.argv[1]
def e(f):
    try: f(); return "ok"
    except OSError as x: return errno.errorcode[x.errno]
print(e(lambda: os.stat(d+"/nope")))
print(e(lambda: os.mkdir(d+"/big")))
print(e(lambda: os.rmdir(d+"/big")))
print(e(lambda: open(d+"/denied").read()))
print(e(lambda: open(d+"/errno-code").read()))
print(e(lambda: open(d+"/boom").read()))
print(e(lambda: open(d+"/odd.bin","rb").read(3) and None))
print(e(lambda: os.mkdir(d+"/"+"x"*256)))`,
      dir,
    );
    assert.equal(r.stdout, "ENOENT\nEEXIST\nENOTEMPTY\nEACCES\nEROFS\nEIO\nok\nENAMETOOLONG\n");
  });

  test("an interrupted request gets EINTR and the handler sees the abort", async () => {
    const r = await py(
      `import os,signal,sys
class Stop(Exception): pass
def h(*a): raise Stop()
signal.signal(signal.SIGALRM, h)
signal.setitimer(signal.ITIMER_REAL, 0.3)
fd=os.open(sys.argv[1], os.O_RDONLY)
try:
    os.read(fd, 5); print("read")
except Stop: print("interrupted")`,
      path.join(dir, "slow"),
    );
    assert.equal(r.stdout, "interrupted\n");
    assert.equal(mem.interrupted, 1);
    assert.equal(m.session.pending, 0);
  });

  test("an interrupted write that takes effect is answered as done, not EINTR (never repeated)", async () => {
    // The signal handler returns, so Python restarts a write that fails with EINTR (PEP 475):
    // answered EINTR although it took effect, it would reach the file system twice.
    const r = await py(
      `import os,signal,sys
signal.signal(signal.SIGALRM, lambda *a: None)
signal.setitimer(signal.ITIMER_REAL, 0.3)
fd=os.open(sys.argv[1], os.O_WRONLY|os.O_APPEND)
print(os.write(fd, b"more\\n"))`,
      path.join(dir, "slow-write"),
    );
    assert.equal(r.stdout, "5\n");
    assert.equal(mem.slowWritesInterrupted, 1, "the kernel interrupted the write");
    assert.equal(mem.slowWrites, 1, "the write reached the file system once");
    // Not readFileSync: this process serves the mount.
    assert.equal(await fs.promises.readFile(path.join(dir, "slow-write"), "utf8"), "data\nmore\n");
    assert.equal(m.session.pending, 0);
  });

  test("notifications: store, inval_inode, inval_entry", async () => {
    const ino = mem.addFile("cached.txt", "version-1\n");
    const cat = () => run("cat", [path.join(dir, "cached.txt")]);
    assert.equal((await cat()).stdout, "version-1\n");
    // Pushed into the page cache: served without a READ.
    assert.equal(await m.session.store(ino, 0, Buffer.from("STORED-01\n")), true);
    assert.equal((await cat()).stdout, "STORED-01\n");
    await mem.write(ino, 0, 0, Buffer.from("version-2\n"));
    assert.equal(await m.session.invalInode(ino, 0, 0), true);
    assert.equal((await cat()).stdout, "version-2\n");
    // Rename behind the kernel's back, then drop the cached names.
    await mem.rename(1, "cached.txt", 1, "moved.txt", 0);
    assert.equal(await m.session.invalEntry(1, "cached.txt"), true);
    assert.equal((await cat()).code, 1);
    assert.equal((await run("cat", [path.join(dir, "moved.txt")])).stdout, "version-2\n");
    assert.equal(await m.session.invalInode(999_999, 0, 0), false);
  });

  test("unmount while a file is open: no hang, holder gets ENOTCONN", async () => {
    const local = new MemoryFileSystem({ openReply: { directIo: true } });
    local.addFile("f", "x".repeat(10000));
    const m2 = await scratch.mount("busy", local);
    const holder = spawn("python3", [
      "-c",
      "import os,sys,errno\nfd=os.open(sys.argv[1],os.O_RDONLY)\nos.read(fd,10)\nprint('open',flush=True)\nsys.stdin.read()\ntry:\n  os.pread(fd,10,5000); print('read')\nexcept OSError as e: print(errno.errorcode[e.errno])",
      path.join(m2.mountpoint, "f"),
    ]);
    scratch.track(holder);
    let out = "";
    holder.stdout.on("data", (d) => {
      out += d;
    });
    await new Promise<void>((res) => holder.stdout.once("data", () => res()));
    await m2.unmount();
    holder.stdin.end();
    await new Promise((res) => holder.once("exit", res));
    assert.equal(out, "open\nENOTCONN\n");
    const stillMounted = fs
      .readFileSync("/proc/self/mountinfo", "utf8")
      .includes(` ${m2.mountpoint} `);
    assert.equal(stillMounted, false);
  });
});
