/**
 * Security item 4: control characters and other non-printables from dump paths and origin
 * data are escaped in every message: one function (common/printable.ts) used by the CLI's
 * error line, the logger (text and JSON) and the tables.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdirSync, rmSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, describe, test } from "node:test";
import { printable } from "../../src/common/printable.js";
import { cli, tempDir } from "./helpers.js";

const ESC = "\x1b[31m";
/** Anything a terminal would act on: C0 (except the escaped \n), DEL, C1, bidi, separators. */
const RAW = /[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]/u;

describe("escaping non-printables in every message", () => {
  const dir = tempDir("printable");
  after(() => rmSync(dir, { recursive: true, force: true }));

  test("printable escapes C0, DEL, C1, bidi overrides, separators; doubles backslashes", () => {
    assert.equal(printable("a\nb\tc\rd"), "a\\nb\\tc\\rd");
    assert.equal(printable(`x${ESC}y`), "x\\x1b[31my");
    assert.equal(printable("\x7f\x9b\0"), "\\x7f\\x9b\\x00");
    assert.equal(printable("evil\u202egnp.exe"), "evil\\u{202e}gnp.exe");
    assert.equal(printable("line\u2028sep"), "line\\u{2028}sep");
    assert.equal(printable("back\\slash"), "back\\\\slash");
    assert.equal(printable("données 日本 ✓"), "données 日本 ✓");
  });

  test("the CLI's error line carries no raw control character", async () => {
    const bad = join(dir, `no${ESC}such\ndir\u202e`);
    const r = await cli(["inspect", bad]);
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /^lazyfs: [^\n]*no\\x1b\[31msuch\\ndir\\u\{202e\}: no such directory\n$/,
    );
    assert.doesNotMatch(r.stderr.slice(0, -1), RAW);
    const images = join(dir, `imgs${ESC}`);
    mkdirSync(images);
    const e = await cli(["inspect", images]);
    assert.equal(e.code, 1);
    assert.doesNotMatch(e.stderr.slice(0, -1), RAW);
    assert.match(e.stderr, /imgs\\x1b\[31m/);
  });

  test("the logger escapes message and fields, in text and in JSON", () => {
    const log = resolve(import.meta.dirname, "../../src/common/log.js");
    const script = `import { logger } from ${JSON.stringify(log)};
      logger("t").warn("msg ${"\\x1b"}[2J here", { path: "/a${"\\n"}b${"\\u202e"}", n: 1 });`;
    for (const format of ["text", "json"]) {
      const out = spawnSync(process.execPath, ["--input-type=module", "-e", script], {
        env: { ...process.env, LAZYFS_LOG: "warn", LAZYFS_LOG_FORMAT: format },
        encoding: "utf8",
      }).stderr;
      const line = out.replace(/\n$/, "");
      assert.doesNotMatch(line, RAW, `${format}: ${JSON.stringify(line)}`);
      assert.doesNotMatch(line, /\n/);
      if (format === "text") {
        assert.equal(line, "warn t: msg \\x1b[2J here path=/a\\nb\\u{202e} n=1");
      } else {
        const j = JSON.parse(line) as { msg: string; path: string };
        assert.equal(j.msg, "msg \\x1b[2J here");
        assert.equal(j.path, "/a\\nb\\u{202e}");
      }
    }
  });
});
