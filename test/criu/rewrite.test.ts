/**
 * Real restore from rewritten images: dump a process that reads a file line by line, move the
 * file elsewhere, rewrite the images to the new path, delete the original, `criu restore`, and
 * check the restored process goes on reading from the copy. Also: corrupted images give one
 * error line naming file and byte offset; the CRIU runner surfaces CRIU's error lines.
 */
import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import {
  copyFileSync,
  cpSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, test } from "node:test";
import {
  CriuError,
  criuDump,
  criuRestore,
  decodeEntries,
  loadDump,
  readImage,
  rewriteImages,
} from "../../src/criu/index.js";
import { alive, killPid, startWorkload, waitFor, waitForFile } from "../support/workload.js";

const CLI = resolve(import.meta.dirname, "../../src/cli/main.js");

/** Reads one line of the input every time `go` grows, and appends it to the output. */
const READER = `
import os, sys, time
d = sys.argv[1]
src = os.open(sys.argv[2], os.O_RDONLY)
def readline():
    line = b""
    while not line.endswith(b"\\n"):
        c = os.read(src, 1)
        if not c:
            break
        line += c
    return line.decode()
go = os.path.join(d, "go")
out = os.path.join(d, "out.txt")
seen = 0
open(os.path.join(d, "ready"), "w").close()
while True:
    n = os.path.getsize(go) if os.path.exists(go) else 0
    while seen < n:
        line = readline()
        with open(out, "a") as f:
            f.write(line if line else "EOF\\n")
        seen += 1
    time.sleep(0.01)
`;

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(process.execPath, [CLI, ...args], { timeout: 30_000 }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : -1) : 0;
      done({ code, stdout, stderr });
    });
  });
}

const lines = (path: string) => {
  try {
    return readFileSync(path, "utf8").split("\n").filter(Boolean);
  } catch {
    return [];
  }
};

describe("rewrite + real restore, corrupted images, CRIU errors", () => {
  let dir: string;
  let images: string;
  const pids: number[] = [];

  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "lazyfs-criu-rw-"));
    images = join(dir, "images");
    mkdirSync(images);
    mkdirSync(join(dir, "orig"));
    mkdirSync(join(dir, "moved elsewhere"));
    const input = ["alpha", "beta", "gamma", "delta", "epsilon"].map((w) => `${w}\n`).join("");
    writeFileSync(join(dir, "orig", "input.txt"), input);
    const w = startWorkload({
      argv: ["python3", "-c", READER, dir, join(dir, "orig", "input.txt")],
      cwd: dir,
      stderr: join(dir, "err.txt"),
    });
    pids.push(w.pid);
    await waitForFile(join(dir, "ready"));
    writeFileSync(join(dir, "go"), "xx");
    await waitFor(() => lines(join(dir, "out.txt")).length === 2, "two lines read");
    await criuDump({ pid: w.pid, imagesDir: images });
    await w.stop();
  });

  after(async () => {
    for (const pid of pids) await killPid(pid);
    rmSync(dir, { recursive: true, force: true });
  });

  test("restored process reads on from the rewritten path", async () => {
    const from = join(dir, "orig", "input.txt");
    const to = join(dir, "moved elsewhere", "input.txt");
    copyFileSync(from, to);
    const rewritten = join(dir, "rewritten");
    const changes = await rewriteImages(images, rewritten, (path) =>
      path === from ? to : undefined,
    );
    assert.ok(changes.length >= 1);
    assert.ok(changes.every((c) => c.from === from && c.to === to && c.image === "files.img"));
    // Only files.img differs; every other file is a byte-identical copy.
    for (const name of readdirSync(images)) {
      const same = readFileSync(join(images, name)).equals(readFileSync(join(rewritten, name)));
      assert.equal(same, name !== "files.img", name);
    }
    // The edited entries keep every other field (size, mode, pos, flags, ...).
    const before = decodeEntries(await readImage(join(images, "files.img")));
    const after = decodeEntries(await readImage(join(rewritten, "files.img")));
    assert.deepEqual(
      after,
      before.map((e) =>
        e.reg && (e.reg as { name: string }).name === from
          ? { ...e, reg: { ...(e.reg as object), name: to } }
          : e,
      ),
    );
    const model = await loadDump(rewritten);
    assert.ok(model.tasks[0]!.fds.some((f) => f.path === to && f.pos === 11));
    rmSync(from);

    const restored = await criuRestore({ imagesDir: rewritten });
    pids.push(restored.pid);
    assert.ok(alive(restored.pid));
    writeFileSync(join(dir, "go"), "xxxxxx");
    await waitFor(() => lines(join(dir, "out.txt")).length === 6, "six lines");
    assert.deepEqual(lines(join(dir, "out.txt")), [
      "alpha",
      "beta",
      "gamma",
      "delta",
      "epsilon",
      "EOF",
    ]);
    const fds = readdirSync(`/proc/${restored.pid}/fd`).map((n) =>
      readlinkSync(`/proc/${restored.pid}/fd/${n}`),
    );
    assert.ok(fds.includes(to));
    assert.ok(!fds.some((f) => f.startsWith(from)));
    await killPid(restored.pid);
  });

  test("restore of unrewritten images fails with CRIU's own error lines", async () => {
    const copy = join(dir, "unrewritten");
    cpSync(images, copy, { recursive: true });
    rmSync(join(copy, "restore.log"), { force: true });
    rmSync(join(dir, "orig", "input.txt"), { force: true });
    const attempt = criuRestore({ imagesDir: copy }).then((r) => {
      pids.push(r.pid);
      return r;
    });
    await assert.rejects(attempt, (err: unknown) => {
      assert.ok(err instanceof CriuError);
      assert.ok(err.criuErrors.length > 0);
      assert.ok(
        err.criuErrors.every((l) => /^(\d+: )?Error \(/.test(l)),
        err.message,
      );
      assert.ok(
        err.criuErrors.some((l) => l.includes("input.txt")),
        err.message,
      );
      assert.equal(err.message.includes("\n"), false);
      assert.match(err.message, /^criu restore failed \(exit code \d+\): Error \(/);
      return true;
    });
  });

  test("corrupted images: one line naming file and byte offset, non-zero exit", async () => {
    const cases: [string, (d: string, pid: number) => void, RegExp][] = [
      ["missing directory", (d) => rmSync(d, { recursive: true }), /: no such directory$/],
      [
        "not a CRIU image",
        (d) => writeFileSync(join(d, "pstree.img"), "hello, world\n"),
        /pstree\.img: not a CRIU image \(magic 0x6c6c6568\) at byte 0$/,
      ],
      [
        "wrong magic",
        (d) => {
          const b = readFileSync(join(d, "pstree.img"));
          b.writeUInt32LE(0x56303138, 4); // the FILES magic in pstree.img
          writeFileSync(join(d, "pstree.img"), b);
        },
        /pstree\.img: expected a PSTREE image \(magic 0x50273030\), found FILES at byte 4$/,
      ],
      [
        "truncated entry",
        (d) => {
          const p = join(d, "pstree.img");
          truncateSync(p, readFileSync(p).length - 3);
        },
        /pstree\.img: entry length \d+ past end of file \(\d+ bytes left\) at byte 8$/,
      ],
      [
        "truncated size word",
        (d, pid) => {
          const p = join(d, `fs-${pid}.img`);
          writeFileSync(p, Buffer.concat([readFileSync(p), Buffer.from([1, 0])]));
        },
        /fs-\d+\.img: truncated entry size \(2 of 4 bytes\) at byte \d+$/,
      ],
      [
        "length past end",
        (d) => {
          const b = readFileSync(join(d, "files.img"));
          b.writeUInt32LE(0x7fffffff, 8);
          writeFileSync(join(d, "files.img"), b);
        },
        /files\.img: entry length 2147483647 past end of file \(\d+ bytes left\) at byte 8$/,
      ],
      [
        "protobuf garbage",
        (d) => {
          const b = readFileSync(join(d, "files.img"));
          b.fill(0xff, 12, 12 + Math.min(16, b.readUInt32LE(8)));
          writeFileSync(join(d, "files.img"), b);
        },
        /files\.img: malformed protobuf \(.+\) at byte 12$/,
      ],
      [
        "empty image",
        (d) => writeFileSync(join(d, "inventory.img"), ""),
        /inventory\.img: empty file, not a CRIU image at byte 0$/,
      ],
      [
        "image with no entries",
        (d, pid) => {
          const p = join(d, `core-${pid}.img`);
          writeFileSync(p, readFileSync(p).subarray(0, 8));
        },
        /core-\d+\.img: CORE image has no entries at byte 8$/,
      ],
    ];
    const pid = (await loadDump(images)).tasks[0]!.pid;
    for (const [name, corrupt, expected] of cases) {
      const copy = join(dir, `bad-${name.replace(/ /g, "-")}`);
      cpSync(images, copy, { recursive: true });
      corrupt(copy, pid);
      const res = await cli(["inspect", copy]);
      assert.notEqual(res.code, 0, name);
      assert.equal(res.stdout, "", name);
      const errLines = res.stderr.split("\n").filter(Boolean);
      assert.equal(errLines.length, 1, `${name}: ${res.stderr}`);
      assert.match(errLines[0]!, /^lazyfs: /, name);
      assert.match(errLines[0]!, expected, name);
    }
  });
});
