/**
 * Lazy directories through a real FUSE mount: names not in the plan come from the origin on
 * demand, every change is local (the origin directory is never touched), changes survive a
 * restart from the same cache, new files belong to their creator, prefetch crawls to
 * independence, and policy globs apply to files found later.
 */
import assert from "node:assert/strict";
import fs from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { LocalOrigin } from "../../src/origin/index.js";
import { metaOf, RecordingOrigin, randomFile, sha256, tempDir } from "../engine/helpers.js";
import { run } from "../fuse/helpers.js";
import { type LazyFixture, mountLazy, pyfs } from "./helpers.js";

/** Every path under `dir` with its type, size, mode and mtime (to prove it did not change). */
function snapshot(dir: string): string {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of fs.readdirSync(d).sort()) {
      const p = join(d, name);
      const st = fs.lstatSync(p, { bigint: true });
      out.push(`${p} ${st.mode} ${st.size} ${st.mtimeNs} ${st.uid}`);
      if (st.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out.join("\n");
}

describe("lazy directories", () => {
  let tmp: { dir: string; cleanup: () => Promise<void> };
  let originApp: string;
  let big: Buffer;
  let before0: string;
  const fixtures: LazyFixture[] = [];

  before(async () => {
    tmp = await tempDir("lazydirs");
    fs.chmodSync(tmp.dir, 0o755); // uid 1000 reaches the mounts
    originApp = join(tmp.dir, "origin", "app");
    fs.mkdirSync(join(originApp, "data"), { recursive: true });
    fs.mkdirSync(join(originApp, "sub", "deep"), { recursive: true });
    await randomFile(join(originApp, "ref.bin"), 100_000);
    big = await randomFile(join(originApp, "data", "big.bin"), 1_000_000);
    fs.writeFileSync(join(originApp, "mod.py"), "X = 42\n");
    fs.writeFileSync(join(originApp, "gone.txt"), "to be removed\n");
    fs.writeFileSync(join(originApp, "secret.key"), "the real secret\n");
    fs.writeFileSync(join(originApp, "sub", "deep", "x.txt"), "deep\n");
    fs.symlinkSync("mod.py", join(originApp, "link"));
    fs.chownSync(join(originApp, "sub"), 1000, 1000);
    fs.chmodSync(join(originApp, "sub"), 0o3775); // setgid + sticky
    fs.chmodSync(originApp, 0o755);
    before0 = snapshot(originApp);
  });

  after(async () => {
    for (const f of fixtures) await f.close();
    await tmp.cleanup();
  });

  const spec = () => ({
    files: [
      {
        targetPath: "/app/ref.bin",
        type: "file" as const,
        mode: 0o100644,
        uid: 0,
        gid: 0,
        mtimeMs: fs.statSync(join(originApp, "ref.bin")).mtimeMs,
        policy: "lazy" as const,
        served: true,
      },
    ],
    dirs: [],
    lazyDirs: [{ targetPath: "/app", originPath: originApp }],
  });

  async function start(name: string, origin: RecordingOrigin, prefetch?: "immediate") {
    const f = await mountLazy({
      mountpoint: join(tmp.dir, name),
      cacheDir: join(tmp.dir, `${name}-cache`),
      origin,
      spec: spec(),
      policies: [{ glob: "*.key", policy: "scrub" }],
      ...(prefetch ? { prefetch: { mode: prefetch } } : {}),
    });
    await f.engine.addFile(await metaOf("/app/ref.bin", join(originApp, "ref.bin")));
    fixtures.push(f);
    return f;
  }

  it("serves names not in the plan from the origin, block by block, and changes only locally", async () => {
    const origin = new RecordingOrigin(new LocalOrigin());
    let f = await start("m1", origin);
    const app = join(f.mount.mountpoint, "app");

    // A file not in the plan, opened by name: only the blocks read are fetched.
    let o = await pyfs(
      app,
      `fd = os.open(A + "/data/big.bin", os.O_RDONLY); out["part"] = os.pread(fd, 100, 500000).hex()`,
    );
    assert.equal(o.part, big.subarray(500000, 500100).toString("hex"));
    const st = f.engine.status().files.find((x) => x.path.endsWith("big.bin"))!;
    assert.equal(st.size, big.length);
    assert.ok(
      st.bytesFetched <= 2 * 64 * 1024,
      `only blocks read were fetched: ${st.bytesFetched}`,
    );
    o = await pyfs(
      app,
      `import hashlib
out["big"] = hashlib.sha256(read(A + "/data/big.bin", "rb")).hexdigest()
out["sub"] = st(A + "/sub")
out["deep"] = read(A + "/sub/deep/x.txt")
out["link"] = os.readlink(A + "/link")
out["viaLink"] = read(A + "/link")
out["key"] = read(A + "/secret.key", "rb").hex()`,
    );
    assert.equal(o.big, sha256(big));
    // Attributes of served directories are the origin's (setgid, sticky, owner).
    const sub = o.sub as Record<string, number>;
    assert.deepEqual([sub.mode, sub.uid, sub.gid], [0o3775, 1000, 1000]);
    assert.equal(o.deep, "deep\n");
    assert.equal(o.link, "mod.py");
    assert.equal(o.viaLink, "X = 42\n");
    // Policy globs apply to files found later: scrub never reads the real bytes.
    assert.equal(o.key, "00".repeat(16));
    assert.ok(!origin.reads.some((x) => x.path.endsWith("secret.key")));

    // Local changes.
    o = await pyfs(
      app,
      `open(A + "/new.txt", "w").write("made here\\n")
os.unlink(A + "/gone.txt")
os.rename(A + "/mod.py", A + "/mod2.py")
os.link(A + "/mod2.py", A + "/mod-hard.py")
os.symlink("new.txt", A + "/new-link")
os.mkdir(A + "/newdir")
os.mkdir(A + "/tmpdir")
os.rmdir(A + "/tmpdir")
os.chmod(A + "/ref.bin", 0o600)
os.chown(A + "/new.txt", 1000, 1000)
open(A + "/mod2.py", "a").write("Y = 1\\n")
out["rmdirSub"] = err(os.rmdir, A + "/sub")
out["nlink"] = st(A + "/mod2.py")["nlink"]
out["hard"] = read(A + "/mod-hard.py")
out["names"] = names(A)
out["gone"] = err(os.stat, A + "/gone.txt")`,
    );
    const expected = [
      "data",
      "link",
      "mod-hard.py",
      "mod2.py",
      "new-link",
      "new.txt",
      "newdir",
      "ref.bin",
      "secret.key",
      "sub",
    ];
    assert.equal(o.rmdirSub, "Directory not empty");
    assert.equal(o.nlink, 2);
    assert.equal(o.hard, "X = 42\nY = 1\n");
    assert.deepEqual(o.names, expected);
    assert.equal(o.gone, "No such file or directory");
    assert.equal(snapshot(originApp), before0, "the origin directory is untouched");

    // Restart from the same cache: everything as the process left it, removed names not asked.
    await f.close();
    fixtures.pop();
    const asked = origin.asked.length;
    f = await start("m1", origin);
    o = await pyfs(
      join(f.mount.mountpoint, "app"),
      `out["names"] = names(A)
out["gone"] = err(os.stat, A + "/gone.txt")
out["new"] = read(A + "/new.txt")
out["newOwner"] = st(A + "/new.txt")["uid"]
out["ref"] = st(A + "/ref.bin")["mode"]
out["hard"] = st(A + "/mod-hard.py")["nlink"]
out["link"] = os.readlink(A + "/new-link")`,
    );
    assert.deepEqual(o.names, expected);
    assert.equal(o.gone, "No such file or directory");
    assert.equal(o.new, "made here\n");
    assert.equal(o.newOwner, 1000);
    assert.equal(o.ref, 0o600);
    assert.equal(o.hard, 2);
    assert.equal(o.link, "new.txt");
    assert.deepEqual(origin.asked.slice(asked), [], "nothing asked of the origin again");
    assert.equal(snapshot(originApp), before0);
  });

  it("gives new files to their creator with the mode asked for, whatever the umask", async () => {
    const origin = new RecordingOrigin(new LocalOrigin());
    const f = await start("m2", origin);
    const app = join(f.mount.mountpoint, "app");
    const pub = join(app, "pub");
    await pyfs(app, `os.mkdir(A + "/pub"); os.chmod(A + "/pub", 0o1777)`);
    const r = await run("setpriv", [
      "--reuid=1000",
      "--regid=1000",
      "--clear-groups",
      "sh",
      "-c",
      `umask 077 && echo hi > ${pub}/mine && mkdir -m 0751 ${pub}/d && umask 022 && python3 -c "import os; os.close(os.open('${pub}/m640', os.O_CREAT|os.O_WRONLY, 0o640))"`,
    ]);
    assert.equal(r.code, 0, r.stderr);
    const o = await pyfs(
      app,
      `out["mine"] = st(A + "/pub/mine")
out["d"] = st(A + "/pub/d")["mode"]
out["m640"] = st(A + "/pub/m640")["mode"]
open(A + "/sub/g", "w").close()
os.mkdir(A + "/sub/gd")
out["g"] = st(A + "/sub/g")["gid"]
out["gd"] = st(A + "/sub/gd")["mode"]`,
    );
    assert.deepEqual(o.mine, { mode: 0o600, uid: 1000, gid: 1000, nlink: 1, size: 3 });
    assert.equal(o.d, 0o751);
    assert.equal(o.m640, 0o640);
    // In a set-group-ID directory, new names take the directory's group (and dirs the bit).
    assert.equal(o.g, 1000);
    assert.equal((o.gd as number) & 0o2000, 0o2000);
    assert.equal(snapshot(originApp), before0);
  });

  it("keeps timestamps to the nanosecond", async () => {
    const origin = new RecordingOrigin(new LocalOrigin());
    const f = await start("m3", origin);
    const o = await pyfs(
      join(f.mount.mountpoint, "app"),
      `p = A + "/ts"; open(p, "w").close(); os.utime(p, ns=(1234567890123456789, 1500000000987654321))
s = os.stat(p); out["t"] = [str(s.st_atime_ns), str(s.st_mtime_ns)]`,
    );
    assert.deepEqual(o.t, ["1234567890123456789", "1500000000987654321"]);
  });

  it("prefetch crawls every lazy directory and reaches independence", async () => {
    const origin = new RecordingOrigin(new LocalOrigin());
    const f = await start("m4", origin, "immediate");
    await f.engine.whenIndependent();
    const st = f.engine.status();
    assert.deepEqual(st.dirs, { crawled: 4, uncrawled: 0, pendingFiles: 0 }); // app data sub deep
    const reads = origin.reads.length;
    const asked = origin.asked.length;
    const o = await pyfs(
      join(f.mount.mountpoint, "app"),
      `import hashlib
out["big"] = hashlib.sha256(read(A + "/data/big.bin", "rb")).hexdigest()
out["all"] = sorted(os.path.join(d, n) for d, ds, fs in os.walk(A) for n in ds + fs)`,
    );
    assert.equal(o.big, sha256(big));
    assert.equal((o.all as string[]).length, 10);
    assert.equal(origin.reads.length, reads, "no origin read after independence");
    assert.equal(origin.asked.length, asked, "no origin lookup after independence");
  });
});
