/**
 * POSIX behaviour of both examples through a real mount (default_permissions, allow_other):
 * special files, ownership of new nodes by the caller (and set-group-ID directories), exact
 * modes whatever the server's umask, long relative paths, hard links, fstat of an unlinked
 * open file, nanosecond times, over-long names and impossible sizes.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import fsp from "node:fs/promises";
import { after, describe, test } from "node:test";
import { type FileSystem, MemoryFileSystem, PassthroughFileSystem } from "../../src/fuse/index.js";
import { py, run, Scratch } from "./helpers.js";

const scratch = new Scratch();
after(() => scratch.cleanup());
// Other users must reach the mounts.
fs.chmodSync(scratch.dir, 0o755);

/** Runs a python3 script as uid/gid 1000 (no supplementary groups); argv[1] is `dir`. */
function pyAs1000(script: string, dir: string) {
  return run("setpriv", [
    "--reuid=1000",
    "--regid=1000",
    "--clear-groups",
    "/usr/bin/python3", // root's PATH may hold a python other users cannot run
    "-c",
    script,
    dir,
  ]);
}

const PY_PRELUDE = `import errno, os, stat, sys
d = sys.argv[1]
def e(f):
    try:
        r = f()
        return "ok" if r is None else r
    except OSError as x: return errno.errorcode[x.errno]
`;

const examples: [string, () => FileSystem][] = [
  ["memory", () => new MemoryFileSystem()],
  ["passthrough", () => new PassthroughFileSystem(scratch.sub(`src-${Date.now()}`))],
];

for (const [name, make] of examples) {
  describe(`${name} example is POSIX`, async () => {
    const m = await scratch.mount(`posix-${name}`, make(), {
      allowOther: true,
      defaultPermissions: true,
    });
    const mp = m.mountpoint;
    // Never sync fs calls on our own mount: this thread serves it.
    await fsp.mkdir(`${mp}/pub`);
    await fsp.chmod(`${mp}/pub`, 0o777);

    test("fifos, sockets and device nodes are made", async () => {
      const r = await py(
        `${PY_PRELUDE}
os.umask(0)
os.mkfifo(d+"/fifo", 0o640)
os.mknod(d+"/sock", 0o600 | stat.S_IFSOCK)
os.mknod(d+"/null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
os.mknod(d+"/blk", 0o600 | stat.S_IFBLK, os.makedev(7, 9))
for n in ["fifo", "sock", "null", "blk"]:
    s = os.lstat(d+"/"+n)
    print(n, stat.filemode(s.st_mode), os.major(s.st_rdev), os.minor(s.st_rdev))
print(sorted(os.listdir(d)))`,
        `${mp}/pub`,
      );
      assert.equal(r.code, 0, r.stderr);
      assert.equal(
        r.stdout,
        "fifo prw-r----- 0 0\nsock srw------- 0 0\nnull crw-rw-rw- 1 3\nblk brw------- 7 9\n" +
          "['blk', 'fifo', 'null', 'sock']\n",
      );
    });

    test("new nodes belong to the caller; a set-group-ID directory gives its group", async () => {
      await fsp.mkdir(`${mp}/sgid`);
      await fsp.chown(`${mp}/sgid`, 0, 2000);
      await fsp.chmod(`${mp}/sgid`, 0o2777);
      const r = await pyAs1000(
        `${PY_PRELUDE}
os.umask(0)
os.close(os.open(d+"/pub/file", os.O_CREAT | os.O_WRONLY, 0o777))
os.mkdir(d+"/pub/dir", 0o777)
os.symlink("file", d+"/pub/link")
os.mkfifo(d+"/pub/ufifo", 0o666)
os.mkdir(d+"/sgid/dir", 0o755)
os.close(os.open(d+"/sgid/file", os.O_CREAT | os.O_WRONLY, 0o640))
for n in ["pub/file", "pub/dir", "pub/link", "pub/ufifo", "sgid/dir", "sgid/file"]:
    s = os.lstat(d+"/"+n)
    print(n, s.st_uid, s.st_gid, oct(stat.S_IMODE(s.st_mode)))`,
        mp,
      );
      assert.equal(r.code, 0, r.stderr);
      assert.equal(
        r.stdout,
        "pub/file 1000 1000 0o777\npub/dir 1000 1000 0o777\npub/link 1000 1000 0o777\n" +
          "pub/ufifo 1000 1000 0o666\nsgid/dir 1000 2000 0o2755\nsgid/file 1000 2000 0o640\n",
      );
    });

    test("modes are exactly those asked for (the caller's umask, not the server's)", async () => {
      const r = await py(
        `${PY_PRELUDE}
os.umask(0)
os.mkdir(d+"/m1", 0o1777)
os.close(os.open(d+"/m2", os.O_CREAT | os.O_WRONLY, 0o4777))
os.mknod(d+"/m3", 0o666 | stat.S_IFIFO)
os.umask(0o027)
os.mkdir(d+"/m4", 0o777)
for n in ["m1", "m2", "m3", "m4"]:
    print(n, oct(stat.S_IMODE(os.lstat(d+"/"+n).st_mode)))`,
        mp,
      );
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "m1 0o1777\nm2 0o4777\nm3 0o666\nm4 0o750\n");
    });

    test("relative paths up to PATH_MAX work at any depth", async () => {
      const r = await py(
        `${PY_PRELUDE}
os.chdir(d)
path = ""
for i in range(16):
    path += "d" * 250
    os.mkdir(path)
    path += "/"
name = path + "f" * (4095 - len(path))
fd = os.open(name, os.O_CREAT | os.O_WRONLY, 0o644)
os.write(fd, b"deep")
os.close(fd)
print(len(name), os.stat(name).st_size, e(lambda: os.unlink(name)))`,
        mp,
      );
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "4095 4 ok\n");
    });

    test("hard links keep working after a name goes; an unlinked open file stats", async () => {
      const r = await py(
        `${PY_PRELUDE}
with open(d+"/a", "w") as f: f.write("hello")
os.link(d+"/a", d+"/b")
os.link(d+"/b", d+"/c")
os.unlink(d+"/a")
os.rename(d+"/b", d+"/b2")
print(os.stat(d+"/b2").st_nlink, open(d+"/c").read(), e(lambda: os.stat(d+"/a")))
fd = os.open(d+"/c", os.O_RDWR)
os.unlink(d+"/c")
os.unlink(d+"/b2")
os.write(fd, b"HELLO!")
s = os.fstat(fd)
print(s.st_size, s.st_nlink)
os.close(fd)`,
        mp,
      );
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "2 hello ENOENT\n6 0\n");
    });

    test("rename flags: RENAME_NOREPLACE and RENAME_EXCHANGE", async () => {
      const r = await py(
        `${PY_PRELUDE}
import ctypes
libc = ctypes.CDLL(None, use_errno=True)
def rename2(a, b, flags):
    if libc.renameat2(-100, (d+"/"+a).encode(), -100, (d+"/"+b).encode(), flags) != 0:
        raise OSError(ctypes.get_errno(), "renameat2")
with open(d+"/x", "w") as f: f.write("x")
with open(d+"/y", "w") as f: f.write("y")
print(e(lambda: rename2("x", "y", 1)), e(lambda: rename2("x", "z", 1)))
print(e(lambda: rename2("z", "y", 2)), open(d+"/z").read(), open(d+"/y").read())
os.unlink(d+"/y")
print(open(d+"/z").read(), sorted(n for n in os.listdir(d) if n in "xyz"))`,
        mp,
      );
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "EEXIST ok\nok y x\ny ['z']\n");
    });

    test("times keep their nanoseconds, also before 1970", async () => {
      const r = await py(
        `${PY_PRELUDE}
open(d+"/t", "w").close()
os.utime(d+"/t", ns=(1234567890123456789, 1600000000987654321))
s = os.stat(d+"/t")
print(s.st_atime_ns, s.st_mtime_ns)
os.utime(d+"/t", ns=(-86400000000001, 5 * 10**9))
s = os.stat(d+"/t")
print(s.st_atime_ns, s.st_mtime_ns)
os.symlink("t", d+"/tl")
os.utime(d+"/tl", ns=(7, 1000000000000000008), follow_symlinks=False)
print(os.lstat(d+"/tl").st_mtime_ns, os.stat(d+"/tl").st_mtime_ns)`,
        mp,
      );
      assert.equal(r.code, 0, r.stderr);
      assert.equal(
        r.stdout,
        "1234567890123456789 1600000000987654321\n-86400000000001 5000000000\n" +
          "1000000000000000008 5000000000\n",
      );
    });

    test("over-long names and impossible sizes are refused with the right errno", async () => {
      const r = await py(
        `${PY_PRELUDE}
long = d + "/" + "n" * 256
print(e(lambda: os.mkdir(long)), e(lambda: open(long, "w")), e(lambda: os.stat(long)))
open(d+"/big", "w").close()
print(e(lambda: os.truncate(d+"/big", 999999999999999)) in ("ok", "EFBIG"))
os.truncate(d+"/big", 12345)
print(os.stat(d+"/big").st_size)`,
        mp,
      );
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, "ENAMETOOLONG ENAMETOOLONG ENAMETOOLONG\nTrue\n12345\n");
    });
  });
}
