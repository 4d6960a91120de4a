/**
 * Issue 10 part 5, "leftovers": a failed command leaves nothing it created; `unmount` returns
 * when the mount point is gone; `--mountpoint` naming a file, `status <unknown id>`, a non-root
 * user, an encrypted key, `--pid 2` or a missing pid: one line and a non-zero exit. The origin
 * is an SSH server written in the test (SFTP and exec over this host).
 */
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import {
  chmodSync,
  cpSync,
  existsSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";
import { decodeEntries, readImage } from "../../src/criu/index.js";
import { cli, makeDump, makeKey, sshArgs, tempDir } from "./helpers.js";
import { startSshServer, type TestSshServer } from "./ssh-server.js";

describe("leftovers and rough edges", () => {
  let dir: string;
  let images: string;
  let state: string;
  let key: string;
  let knownHosts: string;
  let server: TestSshServer;
  let env: Record<string, string>;
  let ssh: string[];

  /** The command failed with exactly one `lazyfs:` line matching `what`. */
  const oneLine = (r: { code: number; stderr: string }, what: RegExp) => {
    assert.notEqual(r.code, 0, r.stderr);
    // (mount says which migration it planned before it starts the daemon: not an error line)
    const lines = r.stderr.replace(/^migration m[0-9a-f]+: .*\n/, "");
    assert.match(lines, /^lazyfs: [^\n]+\n$/, r.stderr);
    assert.doesNotMatch(r.stderr, /Node\.js v|\n\s+at /);
    assert.match(lines, what);
  };
  const nothingLeft = () => assert.deepEqual(readdirSync(state), [], "state left behind");

  before(async () => {
    dir = tempDir("leftovers");
    images = await makeDump(dir);
    state = join(dir, "state");
    mkdirSync(state, { mode: 0o700 });
    env = { LAZYFS_STATE_DIR: state };
    key = makeKey(dir);
    knownHosts = join(dir, "known_hosts");
    server = await startSshServer();
    ssh = sshArgs(server.port, key, knownHosts);
  });

  after(async () => {
    await cli(["unmount", "--all", "--force", "--purge"], { env });
    await server.close();
    rmSync(dir, { recursive: true, force: true });
  });

  test("argument errors of mount, restore and rewrite leave nothing", async () => {
    const out = join(dir, "out-args");
    const cases = [
      ["mount", "--images", images, "--origin", "ssh://"],
      ["restore", "--images", images, "--origin", "ssh://"],
      ["rewrite", "--images", images, "--origin", "ssh://", "--out", out],
      ["mount", "--images", join(dir, "missing"), ...ssh],
      ["restore", "--images", images, ...ssh, "--prefetch", "sometimes"],
      ["mount", "--images", images, ...ssh, "--policy", "*=bogus"],
    ];
    for (const args of cases) {
      oneLine(await cli(args, { env }), /./);
      nothingLeft();
    }
    assert.equal(existsSync(out), false);
  });

  test("a plan that fails on the origin (a file gone there) leaves nothing", async () => {
    const gone = join(dir, "gone");
    mkdirSync(gone);
    const imgs = join(gone, "images");
    cpSync(images, imgs, { recursive: true });
    // The dumped file is missing "on the origin": images that name another directory.
    const files = await readImage(join(imgs, "files.img"));
    const { rewriteImage, encodeImage } = await import("../../src/criu/index.js");
    rewriteImage(files, (p) =>
      p === join(dir, "data.txt") ? join(gone, "nowhere.txt") : undefined,
    );
    writeFileSync(join(imgs, "files.img"), encodeImage(files));
    const cache = join(dir, "cache-gone");
    oneLine(
      await cli(["mount", "--images", imgs, ...ssh, "--cache", cache], { env }),
      /nowhere\.txt/,
    );
    nothingLeft();
    assert.equal(existsSync(cache), false, "a --cache it created is left");
  });

  test("a restore whose CRIU fails: daemon stopped, mount point and state removed", async () => {
    const lazyfsDirs = () => (existsSync("/lazyfs") ? readdirSync("/lazyfs").sort() : []);
    const before = lazyfsDirs();
    const r = await cli(["restore", "--images", images, ...ssh, "--criu", "/bin/false"], { env });
    oneLine(r, /criu/i);
    nothingLeft();
    assert.deepEqual(lazyfsDirs(), before, "a mount point is left");
    assert.doesNotMatch(readFileSync("/proc/self/mountinfo", "utf8"), /lazyfs-m[0-9a-f]+/);
  });

  test("--mountpoint naming a file: one line, nothing created", async () => {
    const file = join(dir, "a-file");
    writeFileSync(file, "x");
    for (const cmd of ["mount", "restore"]) {
      const r = await cli([cmd, "--images", images, ...ssh, "--mountpoint", file], { env });
      oneLine(r, /--mountpoint .*a-file: a file, not a directory/);
      assert.doesNotMatch(r.stderr, /Node\.js|\n\s+at /);
      nothingLeft();
    }
    const under = await cli(["mount", "--images", images, ...ssh, "--mountpoint", `${file}/sub`], {
      env,
    });
    oneLine(under, /a-file is not a directory/);
    nothingLeft();
  });

  test("a daemon that cannot mount: one line, no state directory, no mount point", async () => {
    const r = await cli(
      ["mount", "--background", "--images", images, ...ssh, "--mountpoint", "/proc/lazyfs-no"],
      { env },
    );
    oneLine(r, /daemon for m[0-9a-f]+ failed .*mount point \/proc\/lazyfs-no/);
    nothingLeft();
  });

  test("rewrite --images leaves no manifest, and its names stay inside the mount", async () => {
    const out = join(dir, "out-ok");
    const r = await cli(
      ["rewrite", "--images", images, ...ssh, "--out", out, "--map", `${dir}=/srv/elsewhere`],
      { env },
    );
    assert.equal(r.code, 0, r.stderr);
    nothingLeft();
    const names = decodeEntries(await readImage(join(out, "files.img")))
      .map((e) => (e.reg as { name?: string } | undefined)?.name)
      .filter((n): n is string => n !== undefined);
    const served = names.filter((n) => n.startsWith("/lazyfs/"));
    assert.ok(
      served.some((n) => /^\/lazyfs\/m[0-9a-f]+\/srv\/elsewhere\/data\.txt$/.test(n)),
      names.join(" "),
    );
    for (const n of names) assert.doesNotMatch(n, /\/\.\.?(\/|$)/);
  });

  test("unmount returns once the mount point is gone; --purge clears a custom cache", async () => {
    const cache = join(dir, "my-cache");
    mkdirSync(cache, { mode: 0o700 });
    writeFileSync(join(cache, "keep.txt"), "the user's own file\n");
    const m = await cli(
      [
        "mount",
        "--background",
        "--images",
        images,
        ...ssh,
        "--cache",
        cache,
        "--map",
        `${dir}=/srv/x`,
      ],
      { env },
    );
    assert.equal(m.code, 0, m.stderr);
    const id = m.stdout.trim();
    const mountpoint = `/lazyfs/${id}`;
    // (async: the origin's SSH server runs in this very process)
    assert.equal(
      await readFile(join(mountpoint, "srv/x/data.txt"), "utf8"),
      readFileSync(join(dir, "data.txt"), "utf8"),
    );
    assert.ok(readdirSync(cache).includes("store.json"));
    const u = await cli(["unmount", id, "--purge"], { env });
    assert.equal(u.code, 0, u.stderr);
    // No waiting: when unmount has returned, the mount point is gone.
    assert.equal(existsSync(mountpoint), false, "mount point left");
    assert.equal(readFileSync("/proc/self/mountinfo", "utf8").includes(id), false);
    assert.deepEqual(readdirSync(cache), ["keep.txt"]);
    nothingLeft();
  });

  test("status of an unknown id exits non-zero with one line", async () => {
    oneLine(await cli(["status", "mnosuch"], { env }), /no migration mnosuch on this host/);
    oneLine(await cli(["status", "--json", "mnosuch"], { env }), /no migration mnosuch/);
  });

  test("a non-root user: `must be run as root`; inspect of readable images works", async () => {
    for (const args of [
      ["status"],
      ["unmount", "--all"],
      ["mount", "--images", images, ...ssh],
      ["restore", "--images", images, ...ssh],
      ["migrate", "--from", "ssh://root@127.0.0.1", "--pid", "1"],
    ]) {
      const r = await cli(args, { env, user: "nobody" });
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stderr, "lazyfs: must be run as root\n");
    }
    const shared = join(dir, "shared");
    cpSync(images, shared, { recursive: true });
    chmodSync(dir, 0o755);
    execFileSync("chmod", ["-R", "a+rX", shared]);
    chmodSync(join(shared, "dump.log"), 0o600); // CRIU's own log stays root's
    const ok = await cli(["inspect", "--json", shared], { user: "nobody" });
    assert.equal(ok.code, 0, ok.stderr);
    assert.equal(JSON.parse(ok.stdout).tasks.length, 1);
    chmodSync(join(shared, "pstree.img"), 0o600);
    oneLine(
      await cli(["inspect", shared], { user: "nobody" }),
      /pstree\.img: cannot read image file: permission denied/,
    );
    chmodSync(dir, 0o700);
  });

  test("an encrypted identity file without a terminal: skipped in one line, refused at once", async () => {
    const enc = makeKey(dir, "encrypted", "secret passphrase");
    const before = server.connections;
    const r = await cli(["mount", "--images", images, ...sshArgs(server.port, enc, knownHosts)], {
      env: { ...env, SSH_AUTH_SOCK: "", LAZYFS_LOG: "warn" },
    });
    assert.notEqual(r.code, 0, r.stderr);
    assert.doesNotMatch(r.stderr, /Node\.js v|\n\s+at /);
    const about = r.stderr.split("\n").filter((l) => l.includes(enc) && !l.startsWith("lazyfs: "));
    assert.equal(about.length, 1, r.stderr);
    assert.match(about[0]!, /encrypted and there is no terminal to ask its passphrase.*skipped/);
    const errors = r.stderr.split("\n").filter((l) => l.startsWith("lazyfs: "));
    assert.equal(errors.length, 1, r.stderr);
    assert.match(errors[0]!, /authentication failed/);
    // A refused authentication is final: one connection, no reconnects.
    assert.ok(server.connections - before <= 1, `${server.connections - before} connections`);
    nothingLeft();
  });

  test("migrate --pid 2 (a kernel thread) or a missing pid: one line before CRIU runs", async () => {
    const from = [
      "--from",
      `ssh://root@127.0.0.1:${server.port}`,
      "-i",
      key,
      "--known-hosts",
      knownHosts,
    ];
    const kthread = await cli(["migrate", ...from, "--pid", "2"], { env });
    oneLine(kthread, /pid 2 is a kernel thread; CRIU migrates user processes/);
    const missing = await cli(["migrate", ...from, "--pid", "4194303"], { env });
    oneLine(missing, /no process with pid 4194303 there/);
    nothingLeft();
  });
});
