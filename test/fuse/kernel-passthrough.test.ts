/**
 * Kernel passthrough (FUSE_PASSTHROUGH): files of the passthrough example opened with it are
 * read, written and mapped by the kernel from the source file, and the server never sees a
 * READ or WRITE for them; with passthrough off (LAZYFS_FUSE_PASSTHROUGH=0) the same client
 * gets the same bytes through the server.
 */
import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import fs from "node:fs";
import path from "node:path";
import { after, describe, test } from "node:test";
import { type OpenReply, PassthroughFileSystem } from "../../src/fuse/index.js";
import { py, Scratch, sha256 } from "./helpers.js";

const scratch = new Scratch();
after(() => scratch.cleanup());

/**
 * A client in another process: reads `orig.bin` whole and at random offsets, writes a new
 * file in pieces, changes both through a shared mapping and with pwrite, then prints the
 * sha256 of each file as it reads it back, and their sizes.
 */
const CLIENT = `import hashlib,mmap,os,random,sys
d=sys.argv[1]
random.seed(7)
fd=os.open(d+"/orig.bin",os.O_RDWR)
whole=b""
while True:
    b=os.read(fd,1<<20)
    if not b: break
    whole+=b
for i in range(200):
    off=random.randrange(0,len(whole))
    assert os.pread(fd,4096,off)==whole[off:off+4096], off
m=mmap.mmap(fd,0)
m[100:105]=b"HELLO"
m.flush(); m.close()
os.pwrite(fd,b"tail!",len(whole))
os.fsync(fd); os.close(fd)
fd=os.open(d+"/new.bin",os.O_CREAT|os.O_RDWR|os.O_TRUNC,0o644)
data=bytes(random.getrandbits(8) for _ in range(300000))
for i in range(0,len(data),65536): os.write(fd,data[i:i+65536])
os.pwrite(fd,b"XYZ",5)
os.close(fd)
for n in ("orig.bin","new.bin"):
    with open(d+"/"+n,"rb") as f: print(n,hashlib.sha256(f.read()).hexdigest(),os.stat(d+"/"+n).st_size)
`;

function expected(orig: Buffer): Buffer {
  const out = Buffer.concat([orig, Buffer.from("tail!")]);
  out.write("HELLO", 100);
  return out;
}

async function runClient(passthrough: boolean) {
  const name = passthrough ? "on" : "off";
  const src = scratch.sub(`src-${name}`);
  const orig = randomBytes((3 << 20) + 17);
  fs.writeFileSync(path.join(src, "orig.bin"), orig);
  const m = await scratch.mount(`mnt-${name}`, new PassthroughFileSystem(src), {
    passthrough: true,
  });
  const r = await py(CLIENT, m.mountpoint);
  assert.equal(r.code, 0, r.stderr);
  const want = expected(orig);
  const newData = fs.readFileSync(path.join(src, "new.bin"));
  assert.equal(newData.length, 300000);
  assert.equal(newData.subarray(5, 8).toString(), "XYZ");
  assert.equal(
    r.stdout,
    `orig.bin ${sha256(want)} ${want.length}\nnew.bin ${sha256(newData)} 300000\n`,
  );
  assert.equal(sha256(fs.readFileSync(path.join(src, "orig.bin"))), sha256(want));
  const status = m.session.passthrough;
  const counts = m.session.requestCounts();
  await m.unmount();
  return { status, counts };
}

describe("kernel passthrough", () => {
  test("a passthrough open is read, written and mapped by the kernel: the server sees no READ or WRITE", async () => {
    const { status, counts } = await runClient(true);
    assert.equal(status.enabled, true, `passthrough off: ${status.reason}`);
    assert.ok(status.opens >= 4, `${status.opens} passthrough opens`);
    assert.equal(status.fallbacks, 0);
    assert.equal(status.backingIds, 0, "every backing id closed after release");
    assert.equal(counts.READ ?? 0, 0, JSON.stringify(counts));
    assert.equal(counts.WRITE ?? 0, 0, JSON.stringify(counts));
    assert.ok((counts.OPEN ?? 0) + (counts.CREATE ?? 0) >= 4);
  });

  test("with LAZYFS_FUSE_PASSTHROUGH=0 the same client is served by the server, same bytes", async () => {
    const before = process.env.LAZYFS_FUSE_PASSTHROUGH;
    process.env.LAZYFS_FUSE_PASSTHROUGH = "0";
    try {
      const { status, counts } = await runClient(false);
      assert.equal(status.enabled, false);
      assert.equal(status.reason, "LAZYFS_FUSE_PASSTHROUGH=0");
      assert.equal(status.opens, 0);
      assert.ok((counts.READ ?? 0) > 0, JSON.stringify(counts));
      assert.ok((counts.WRITE ?? 0) > 0, JSON.stringify(counts));
    } finally {
      if (before === undefined) delete process.env.LAZYFS_FUSE_PASSTHROUGH;
      else process.env.LAZYFS_FUSE_PASSTHROUGH = before;
    }
  });

  test("an inode open without passthrough is not switched: the next open falls back, same bytes", async () => {
    const src = scratch.sub("src-mixed");
    const data = randomBytes(1 << 20);
    fs.writeFileSync(path.join(src, "f.bin"), data);
    // The first open of each inode asks for no passthrough (as LazyFS does for a file whose
    // blocks are still on the origin); later ones ask for it.
    class Mixed extends PassthroughFileSystem {
      private readonly seen = new Set<number>();
      releases = 0;
      override async open(ino: number, flags: number): Promise<OpenReply> {
        const o = await super.open(ino, flags);
        const first = !this.seen.has(ino);
        this.seen.add(ino);
        return { ...o, passthrough: !first };
      }
      override async release(ino: number, fh: number): Promise<void> {
        await super.release(ino, fh);
        this.releases++;
      }
    }
    const fsys = new Mixed(src);
    const m = await scratch.mount("mnt-mixed", fsys, { passthrough: true });
    const p = path.join(m.mountpoint, "f.bin");
    const r1 = await py(
      `import os,sys
p=sys.argv[1]
a=os.open(p,os.O_RDONLY)          # caching mode
b=os.open(p,os.O_RDWR)            # asks for passthrough: must fall back, not fail
os.pwrite(b,b"both",10)
assert os.pread(a,4,10)==b"both"
os.close(b); os.close(a)`,
      p,
    );
    assert.equal(r1.code, 0, r1.stderr);
    assert.equal(m.session.passthrough.fallbacks, 1);
    // RELEASE reaches the server after close(2) returned: wait for both.
    while (fsys.releases < 2) await new Promise((res) => setTimeout(res, 20));
    const r2 = await py(
      `import hashlib,sys
with open(sys.argv[1],"rb") as f: print(hashlib.sha256(f.read()).hexdigest())`,
      p,
    );
    assert.equal(r2.code, 0, r2.stderr);
    const want = Buffer.from(data);
    want.write("both", 10);
    assert.equal(r2.stdout.trim(), sha256(want));
    const st = m.session.passthrough;
    assert.deepEqual(
      { ...st, reason: undefined },
      {
        enabled: true,
        reason: undefined,
        opens: 1,
        fallbacks: 1,
        backingIds: st.backingIds,
      },
    );
    await m.unmount();
  });
});
