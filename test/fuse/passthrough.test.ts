/**
 * The passthrough example, the ENOSYS default, RESEND, and the mount life cycle (signals,
 * stale mounts of a crashed server), all through real mounts.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { after, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import {
  type FileSystem,
  FuseError,
  Init,
  MemoryFileSystem,
  mountInfo,
  type OpenReply,
  PassthroughFileSystem,
  type RequestContext,
  timespecNow,
} from "../../src/fuse/index.js";
import { py, run, Scratch, sha256 } from "./helpers.js";

const scratch = new Scratch();
after(() => scratch.cleanup());

describe("passthrough file system", () => {
  test("copies in and out byte-exact, namespace operations reach the source", async () => {
    const src = scratch.sub("pt-src");
    const data = randomBytes((5 << 20) + 123);
    fs.writeFileSync(path.join(src, "orig.bin"), data);
    const m = await scratch.mount("pt", new PassthroughFileSystem(src));
    const mp = m.mountpoint;
    const read = await run("sha256sum", [path.join(mp, "orig.bin")]);
    assert.equal(read.stdout.split(" ")[0], sha256(data));
    const cp = await run("dd", [
      `if=${path.join(mp, "orig.bin")}`,
      `of=${path.join(mp, "copy.bin")}`,
      "bs=65537",
      "conv=fsync",
      "status=none",
    ]);
    assert.equal(cp.code, 0, cp.stderr);
    assert.equal(sha256(fs.readFileSync(path.join(src, "copy.bin"))), sha256(data));
    const r = await py(
      `import os,sys
d=sys.argv[1]
os.mkdir(d+"/sub")
os.rename(d+"/copy.bin", d+"/sub/moved.bin")
os.symlink("moved.bin", d+"/sub/link")
os.link(d+"/sub/moved.bin", d+"/hard.bin")
os.truncate(d+"/hard.bin", 1000)
print(sorted(os.listdir(d)), sorted(os.listdir(d+"/sub")), os.readlink(d+"/sub/link"), os.stat(d+"/sub/moved.bin").st_size, os.stat(d+"/hard.bin").st_nlink)
os.unlink(d+"/hard.bin")
st=os.statvfs(d)
print(st.f_bsize > 0, st.f_blocks > 0)`,
      mp,
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(
      r.stdout,
      "['hard.bin', 'orig.bin', 'sub'] ['link', 'moved.bin'] moved.bin 1000 2\nTrue True\n",
    );
    assert.deepEqual(fs.readdirSync(src).sort(), ["orig.bin", "sub"]);
    assert.equal(fs.readlinkSync(path.join(src, "sub/link")), "moved.bin");
    assert.equal(m.session.flags & Init.HAS_RESEND, Init.HAS_RESEND);
  });

  test("unimplemented operations answer ENOSYS", async () => {
    const minimal: FileSystem = {
      async getattr() {
        const now = timespecNow();
        return {
          attr: {
            ino: 1,
            size: 0,
            atime: now,
            mtime: now,
            ctime: now,
            mode: 0o40755,
            nlink: 2,
            uid: 0,
            gid: 0,
          },
        };
      },
      async lookup() {
        throw new FuseError("ENOENT");
      },
    };
    const m = await scratch.mount("minimal", minimal);
    const r = await py(
      `import os,sys,errno
def e(f):
    try: f(); return "ok"
    except OSError as x: return errno.errorcode[x.errno]
print(e(lambda: os.mkdir(sys.argv[1]+"/d")), e(lambda: os.listdir(sys.argv[1])), e(lambda: os.stat(sys.argv[1]+"/x")))`,
      m.mountpoint,
    );
    assert.equal(r.stdout, "ENOSYS ENOSYS ENOENT\n");
  });
});

describe("backing fd fast path", () => {
  /** A passthrough that counts calls of its own read/write (the fast path bypasses them). */
  class Counting extends PassthroughFileSystem {
    calls = 0;
    override async read(ino: number, fh: number, off: number, size: number, ctx: RequestContext) {
      this.calls++;
      return super.read(ino, fh, off, size, ctx);
    }
    override async write(ino: number, fh: number, off: number, data: Buffer) {
      this.calls++;
      return super.write(ino, fh, off, data);
    }
  }

  test("reader threads serve READ/WRITE from the backing fd, unaligned and past EOF", async () => {
    const src = scratch.sub("fast-src");
    const data = randomBytes((3 << 20) + 4097);
    fs.writeFileSync(path.join(src, "a.bin"), data);
    for (const directIo of [false, true]) {
      const pt = new Counting(src, { openReply: { directIo } });
      const m = await scratch.mount(`fast-${directIo}`, pt, { writebackCache: !directIo });
      const f = path.join(m.mountpoint, "a.bin");
      assert.equal((await run("sha256sum", [f])).stdout.split(" ")[0], sha256(data));
      const r = await py(
        `import os,sys
fd=os.open(sys.argv[1],os.O_RDWR)
print(os.pread(fd,10,4095).hex(), len(os.pread(fd,100,${data.length - 7})), len(os.pread(fd,10,${data.length + 5})))
os.pwrite(fd,b"hello",12345); os.pwrite(fd,b"tail",${data.length + 10})
os.fsync(fd); os.close(fd)
fd=os.open(sys.argv[2],os.O_WRONLY|os.O_CREAT,0o644)
for i in range(40): os.write(fd, bytes([i])*65537)
os.close(fd)`,
        f,
        path.join(m.mountpoint, "new.bin"),
      );
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `${data.subarray(4095, 4105).toString("hex")} 7 0\n`);
      await m.unmount();
      const now = fs.readFileSync(path.join(src, "a.bin"));
      assert.equal(now.length, data.length + 14);
      assert.equal(now.subarray(12345, 12350).toString(), "hello");
      assert.equal(now.subarray(data.length + 10).toString(), "tail");
      const made = fs.readFileSync(path.join(src, "new.bin"));
      assert.equal(made.length, 40 * 65537);
      assert.equal(made[39 * 65537], 39);
      fs.writeFileSync(path.join(src, "a.bin"), data);
      fs.rmSync(path.join(src, "new.bin"));
      assert.equal(pt.calls, 0, `directIo=${directIo}: read/write of the file system were called`);
      assert.ok(m.session.fastPath.reads > 0 && m.session.fastPath.writes > 0);
    }
  });

  test("errors of the backing fd reach the caller", async () => {
    const src = scratch.sub("fast-err-src");
    fs.writeFileSync(path.join(src, "ro.bin"), "read only\n");
    class ReadOnlyBacking extends PassthroughFileSystem {
      override async open(ino: number, flags: number): Promise<OpenReply> {
        const o = await super.open(ino, flags);
        const ro = fs.openSync(path.join(src, "ro.bin"), "r");
        fs.closeSync(o.fh ?? -1);
        return { ...o, fh: ro, backingFd: ro, directIo: true };
      }
    }
    const m = await scratch.mount("fast-err", new ReadOnlyBacking(src));
    const r = await py(
      `import os,sys,errno
fd=os.open(sys.argv[1],os.O_RDWR)
print(os.pread(fd,100,0))
try: os.pwrite(fd,b"x",0); print("ok")
except OSError as e: print(errno.errorcode[e.errno])`,
      path.join(m.mountpoint, "ro.bin"),
    );
    assert.equal(r.stdout, "b'read only\\n'\nEBADF\n", r.stderr);
  });

  test("handles beyond the table's capacity are served from their fd by the main thread", async () => {
    const src = scratch.sub("fast-many-src");
    for (let i = 0; i < 40; i++) fs.writeFileSync(path.join(src, `f${i}`), `file ${i}\n`);
    const pt = new Counting(src, { openReply: { directIo: true } });
    const m = await scratch.mount("fast-many", pt, { backingHandles: 16 });
    const script = `import os,sys
fds=[os.open(os.path.join(sys.argv[1],"f%d"%i),os.O_RDWR) for i in range(40)]
for i,fd in enumerate(fds): os.pwrite(fd,b"FILE",0)
print("".join(os.pread(fd,100,0).decode() for fd in fds) == "".join("FILE %d\\n"%i for i in range(40)))
for fd in fds: os.close(fd)`;
    const r = await py(script, m.mountpoint);
    assert.equal(r.stdout, "True\n", r.stderr);
    const first = m.session.fastPath;
    assert.ok(first.reads >= 16 && first.reads < 40, JSON.stringify(first));
    assert.ok(first.writes >= 16 && first.writes < 40, JSON.stringify(first));
    // Closing every file frees the table: all 40 fit in turn when opened one at a time.
    for (let i = 0; i < 40; i++) fs.writeFileSync(path.join(src, `f${i}`), `file ${i}\n`);
    const one = await py(
      `import os,sys
print(sum(len(open(os.path.join(sys.argv[1],"f%d"%i),"rb").read()) for i in range(40)))`,
      m.mountpoint,
    );
    assert.equal(one.stdout, `${40 * 7 + 30 * 1}\n`, one.stderr);
    // Two READs per file with direct I/O: the data, then the empty one at EOF.
    assert.equal(m.session.fastPath.reads - first.reads, 80);
    assert.equal(pt.calls, 0);
  });
});

describe("resend", () => {
  test("a request lost by the server is answered after FUSE_NOTIFY_RESEND", async () => {
    let calls = 0;
    let releaseLost: (() => void) | undefined;
    class Losing extends MemoryFileSystem {
      override async open(ino: number, flags: number): Promise<OpenReply> {
        return { ...(await super.open(ino, flags)), directIo: true };
      }
      override async read(
        ino: number,
        fh: number,
        offset: number,
        size: number,
        ctx?: RequestContext,
      ) {
        if (offset === 0) calls++;
        // The first READ "gets lost" (as if the server restarted mid-request).
        if (offset === 0 && calls === 1) await new Promise<void>((res) => (releaseLost = res));
        return super.read(ino, fh, offset, size, ctx);
      }
    }
    const mem = new Losing();
    mem.addFile("r.txt", "resent content\n");
    const m = await scratch.mount("resend", mem);
    const cat = run("cat", [path.join(m.mountpoint, "r.txt")]);
    for (let i = 0; i < 500 && calls === 0; i++) await sleep(10);
    assert.equal(calls, 1);
    assert.equal(await m.session.resend(), true);
    const out = await cat;
    assert.equal(out.stdout, "resent content\n");
    assert.equal(calls, 2);
    releaseLost?.(); // its late reply goes to a request the kernel no longer has; ignored
    for (let i = 0; i < 100 && m.session.pending > 0; i++) await sleep(10);
    assert.equal(m.session.pending, 0);
  });
});

describe("mount life cycle", () => {
  const child = fileURLToPath(new URL("./server-child.js", import.meta.url));

  function startServer(mp: string) {
    const p = spawn(process.execPath, [child, mp], { stdio: ["ignore", "pipe", "inherit"] });
    scratch.track(p);
    const ready = new Promise<void>((res, rej) => {
      p.stdout.once("data", () => res());
      p.once("exit", (code) => rej(new Error(`server exited ${code}`)));
    });
    return {
      p,
      ready,
      exited: new Promise((res) => p.once("exit", (code, sig) => res(code ?? sig))),
    };
  }

  test("SIGTERM unmounts cleanly; a crashed server's stale mount is recovered", async () => {
    const mp = scratch.sub("life");
    const s1 = startServer(mp);
    await s1.ready;
    assert.equal((await run("cat", [path.join(mp, "hello")])).stdout, "hello from child\n");
    s1.p.kill("SIGTERM");
    assert.equal(await s1.exited, 143);
    assert.equal(mountInfo(mp), undefined);

    const s2 = startServer(mp);
    await s2.ready;
    s2.p.kill("SIGKILL");
    await s2.exited;
    const stale = await py(
      "import os,sys,errno\ntry: os.listdir(sys.argv[1]); print('ok')\nexcept OSError as e: print(errno.errorcode[e.errno])",
      mp,
    );
    assert.equal(stale.stdout, "ENOTCONN\n");

    // A new server mounts over the stale mount after detaching it.
    const mem = new MemoryFileSystem();
    mem.addFile("again", "back\n");
    const m = await scratch.mount("life", mem);
    assert.equal((await run("cat", [path.join(mp, "again")])).stdout, "back\n");
    await m.unmount();
    assert.equal(mountInfo(mp), undefined);
  });
});
